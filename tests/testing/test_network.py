"""``cold_start``: a simulated server's network, cold for the opening burst, then warm."""

import asyncio

import pytest

from llmguard.testing import FixedWindowServer, cold_start


async def test_the_opening_burst_is_slow_on_its_way_and_later_trips_are_not() -> None:
    """The trips started within ``span`` of the first take ``cold`` s to arrive, later ones
    ``warm``: counted by the server when they arrive."""
    server = FixedWindowServer(rpm=100, latency=0.0, send_latency=cold_start(0.8, 0.01))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(server.acompletion(messages=[{"role": "user", "content": "hi"}])
                           for _ in range(3)))
    await asyncio.sleep(2.0)
    await server.acompletion(messages=[{"role": "user", "content": "hi"}])
    arrivals = [a.at - start for a in server.arrivals]
    assert arrivals == pytest.approx([0.8, 0.8, 0.8, 3.6 + 0.01], abs=1e-6)


@pytest.mark.parametrize("name, args", [("cold", (-1.0,)), ("warm", (0.8, -0.1)),
                                        ("span", (0.8, 0.0, float("nan")))])
def test_bad_seconds_are_refused_naming_the_argument(name: str, args: tuple) -> None:
    with pytest.raises(ValueError, match=name):
        cold_start(*args)
