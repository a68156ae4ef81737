"""LiteLLM's proxy under load, started in the last seconds of a minute (#30), in virtual time:
a clock-minute proxy with 4 workers (2 s each) counting a request when a worker takes it, its
``remaining`` counting answers, fed 3x its quota at once by the README stack with only
``rpm``/``tpm`` given (``bench_composition.py``'s queueing proxy from :58/:59)."""

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard.testing import ProxyWindowServer


def ask(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question number {i}"}], "max_tokens": 200}


@pytest.mark.parametrize("phase", [58, 59])
async def test_a_burst_queued_in_the_proxy_before_the_minute_is_not_let_go_at_its_send_time(
        phase: float) -> None:
    """The 32 sent at :58 are taken by its workers until :72, the proxy counting 28 of them in
    the next minute; their answers read that minute's ``remaining`` down to 0 (the clock
    minute unconfirmed: no answer straddles it). Held only until our oldest *sent* left a
    window, the 32 went again at :118, into the same minute: 29 refused (a 429 after 54 in
    the minute: the limit learned 5 low for the rest of the run), 1.24x. Each counted at the
    latest its answer allows (its answer less the shortest round trip), the cap holds until
    they are out; the probe at the clock minute confirms it. At most one 429 (the ``rpm - 1``
    learned), the limit learned as the proxy admits, within 1.25x the server's ideal (the
    first minute's 3 left unused: nothing told the clock minute from a window sliding over
    its takes before it)."""
    server = ProxyWindowServer(rpm=60, tpm=40_000, latency=2.0, reports="answered", workers=4)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - server.phase()) % 60)
    pipeline = (lg.Pipeline(name="readme").metrics().cache(ttl=300)
                .fallback({"model": "backup"}).retry(attempts=4, seed=0).circuit_breaker()
                .timeout(30).rate_limit(rpm=60, tpm=40_000).concurrency_limit(32))
    limiter = next(layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit))
    server.on_headers.append(limiter.observe_headers)
    send = pipeline.wrap(server.acompletion)
    start = loop.time()
    results = await asyncio.gather(*(send(model="primary", **ask(i)) for i in range(180)),
                                   return_exceptions=True)
    wall = loop.time() - start
    assert not [r for r in results if isinstance(r, BaseException)]
    best = server.ideal_time(180, tokens=server.charge(**ask(100)), start=start)
    stats = limiter.statistics()
    assert server.statistics().rate_limited <= 1, stats.shape
    assert stats.requests_limit == 59, stats.shape
    assert wall <= 1.25 * best, (wall, best, stats.shape)


@pytest.mark.parametrize("phase", [58, 59])
async def test_the_first_minute_of_a_burst_queued_late_is_filled_before_its_boundary(
        phase: float) -> None:
    """As above: the 32 sent at :58 (:59) are taken a worker's turn at a time, 4 of them
    before the minute; the 28 sent as their answers come are taken by :86, 56 counted in the
    first full minute of the proxy's 59. Held until the boundary's probe (the ``remaining`` of
    0 its answers read counts answers, not takes), those 3 were lost, and a fourth minute
    needed for the last 2 (1.21x). Every one of ours dated by its answer less the shortest
    round trip (the latest the proxy took it), the 4 taken at :58 leave a window sliding over
    takes at :118, as a clock minute counting takes has room for them: they go then. At most
    one 429 (the ``rpm - 1``), within the issue's 1.10x of the server's ideal."""
    server = ProxyWindowServer(rpm=60, tpm=40_000, latency=2.0, reports="answered", workers=4)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - server.phase()) % 60)
    pipeline = (lg.Pipeline(name="readme").metrics().cache(ttl=300)
                .fallback({"model": "backup"}).retry(attempts=4, seed=0).circuit_breaker()
                .timeout(30).rate_limit(rpm=60, tpm=40_000).concurrency_limit(32))
    limiter = next(layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit))
    server.on_headers.append(limiter.observe_headers)
    send = pipeline.wrap(server.acompletion)
    start = loop.time()
    results = await asyncio.gather(*(send(model="primary", **ask(i)) for i in range(180)),
                                   return_exceptions=True)
    wall = loop.time() - start
    assert not [r for r in results if isinstance(r, BaseException)]
    best = server.ideal_time(180, tokens=server.charge(**ask(100)), start=start)
    stats = limiter.statistics()
    assert server.statistics().rate_limited <= 1, stats.shape
    assert wall <= 1.10 * best, (wall, best, stats.shape)
