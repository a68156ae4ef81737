"""A Router deployment's margin is measured as RateLimit's (``ratelimit/latency.py``): from the
attempt's admission at the deployment to its answer's headers, less the time the server says
it spent; ``margin=`` given wins; 0.5 s a minute until measured, and against a server that
says nothing of its own time. Statistics and repr say which. Virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard import Deployment, Router
from llmguard._admission.ratelimit.latency import FLOOR
from llmguard.testing import SlidingWindowServer, TokenBucketServer, virtual_wall_clock
from llmguard.testing._quota import sliding_peak
from cold_network import warming

ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


async def run(servers: list[Any], rpms: list[int], calls: int,
              **options: Any) -> tuple[Router, list[float]]:
    """``calls`` at once through Retry and a Router over one deployment per server (with its
    ``rpm``): the router, and each deployment's margin 30 s in."""
    deployments = [Deployment(server.acompletion, name=f"d{i}", rpm=rpm, **options)
                   for i, (server, rpm) in enumerate(zip(servers, rpms))]
    router = Router(*deployments)
    for server in servers:
        server.on_headers.append(router.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), router)(servers[0].acompletion)

    async def margins_later() -> list[float]:
        await asyncio.sleep(30)
        return [d.margin for d in router.statistics().deployments.values()]

    later = asyncio.get_running_loop().create_task(margins_later())
    results = await asyncio.gather(*(guarded(**ASK) for _ in range(calls)))
    assert len(results) == calls
    return router, await later


@pytest.mark.parametrize("cold", [0.2, 0.8])
@pytest.mark.parametrize("headers", [True, False])
async def test_a_cold_client_never_puts_a_deployment_over_its_sliding_window(cold,
                                                                             headers) -> None:
    """3x the quotas at once from a cold client (the first burst's requests take ``cold``
    seconds to arrive, later ones 10 ms), with or without rate-limit headers: with default
    settings no deployment's server admits more than its ``rpm`` within its 60 s, and none
    answers a 429 but, without headers, the one probe a sliding window refuses
    (``ratelimit/silent.py``: a server that says nothing is probed after a clock minute).
    The first burst's answers measured each deployment's margin (there and back, less the
    server's time); a window after the network warmed up it is the floor, and statistics
    and repr say measured."""
    rpms = [60, 120]
    servers = [SlidingWindowServer(rpm=rpm, latency=1.0, rate_limit_headers=headers)
               for rpm in rpms]
    warm_ups = [warming(server, cold, 0.01, cold + 0.5) for server in servers]
    with virtual_wall_clock():  # the probe goes at a clock minute: the same one in every run
        router, margins = await run(servers, rpms, 540)
    await asyncio.gather(*warm_ups)
    for server, rpm in zip(servers, rpms):
        served = [(a.at, 1) for a in server.arrivals if a.status == 200]
        assert sliding_peak(served, 60.0) <= rpm
        assert server.statistics().rate_limited == (0 if headers else 1)
    assert all(margin >= cold for margin in margins)
    assert [d.margin for d in router.statistics().deployments.values()] == [FLOOR, FLOOR]
    assert repr(router).count(f"margin {FLOOR:g} s (measured)") == 2


async def test_the_constant_start_is_not_enough_for_a_slow_cold_start() -> None:
    """Why measured: the start (0.5 s) given as ``margin=`` against a cold start of 0.8 s sends
    the second burst before the first one's arrivals left the window of a server that says
    nothing of its limits (no reset to cap by: a proxy's); the margin given is never replaced,
    and says so."""
    server = SlidingWindowServer(rpm=120, latency=1.0, rate_limit_headers=False)
    warm_up = warming(server, 0.8, 0.01, 1.3)
    router, margins = await run([server], [120], 360, margin=0.5)
    await warm_up
    assert server.statistics().rate_limited > 0
    assert margins == [0.5] and router.statistics().deployments["d0"].margin == 0.5
    assert "margin 0.5 s (given)" in repr(router.deployments[0])


async def test_a_server_that_says_nothing_of_its_time_keeps_the_start() -> None:
    """No processing-time header: the round trip includes the generation, so nothing is
    measured; the margin stays 0.5 s a minute."""
    server = TokenBucketServer(rpm=60, latency=3.0)
    server.processing_header = None
    router, margins = await run([server], [60], 30)
    assert margins == [0.5] and router.statistics().deployments["d0"].margin == 0.5
    assert "margin 0.5 s (start)" in repr(router)


async def test_quotas_learned_from_headers_measure_their_margin_too() -> None:
    """A deployment given no quota learns it from the first headers, then measures its margin
    from the answers as one given ``rpm`` does (None in statistics until the quotas are
    known): 0.3 s each way, a round trip of 0.6 s less the server's own time."""
    server = TokenBucketServer(rpm=60, latency=1.0, send_latency=0.3)
    router = Router(Deployment(server.acompletion, name="learned", refill="continuous"))
    server.on_headers.append(router.observe_headers)
    assert router.statistics().deployments["learned"].margin is None
    chat = lg.guard(router)(server.acompletion)
    await asyncio.gather(*(chat(**ASK) for _ in range(30)))
    stats = router.statistics().deployments["learned"]
    assert stats.quotas_known and stats.margin == pytest.approx(0.6)
    assert server.statistics().rate_limited == 0


async def test_headers_of_another_routers_attempt_teach_this_one_nothing() -> None:
    """Headers read while another router's attempt is in progress (or none) sample no margin
    here: only the deployment an attempt went to learns its way there."""
    server = TokenBucketServer(rpm=60, latency=1.0, send_latency=0.3)
    mine, other = (Router(Deployment(server.acompletion, name="a", rpm=60)) for _ in range(2))
    server.on_headers.append(mine.observe_headers)
    chat = lg.guard(other)(server.acompletion)
    await asyncio.gather(*(chat(**ASK) for _ in range(5)))
    mine.observe_headers({"openai-processing-ms": "1"})
    assert mine.statistics().deployments["a"].margin == 0.5
