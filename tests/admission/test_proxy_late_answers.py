"""LiteLLM's proxy when every answer of the opening burst is written after the clock minute,
in virtual time: what ``llmguard run --api-base URL --rpm 1200`` met in
``benchmarks/bench_cli.py --litellm`` (2 of 5 runs at 1.75-1.77x its ideal, one 429).

The real proxy (litellm 1.108.7, one worker, 1,200 sent at :41 by ``llmguard run``'s
Retry -> RateLimit(rpm=1200) -> ConcurrencyLimit(1024)) wrote its first answer to that burst at
:08 of the next minute, 27 s late, and the rest by :15; its ``x-ratelimit-remaining-requests``
counts successes of the minute the answer is made in (``Router.get_model_group_usage``), not
the requests its pre-call check admitted, so those answers read 1199 falling to 176 in the new
minute, and the 176 held back by the concurrency limit (sent at :08) 175 falling to 0 by :22.
No answer straddled the minute, so nothing told the clock minute from a sliding window (a
sliding window of 1,200 with 1,024 of ours sent at :41 admits exactly those 176 and reports 0
after them); the ``remaining`` of 0 was held until the supposed next clock minute, the minute
between went unused while the proxy would have admitted 1,023 more, and the probe at the
following minute confirmed the fixed window too late (its 1,200th refused, retried at the
minute after: 139 s against an ideal of 79 s). When the proxy answered in time (first answers
before the minute) the same runs took 1.03-1.06x.

Modelled here: the proxy counting at arrival, answering each request ``latency`` s later, its
``remaining`` counting answers. Reproduced at 22 s and 27 s (1.5x and more), not at 15 s
(answers before the minute: learned, 1.0x).
"""

import asyncio

import pytest

import llmguard as lg
from llmguard.testing import ProxyWindowServer
from llmguard.testing._quota import FixedWindow

pytestmark = pytest.mark.usefixtures("pinned_wall_clock")

RPM, CALLS, SLOTS = 1200, 2400, 1024  #: bench_cli's LiteLLM run; SLOTS: the CLI's concurrency


def ask(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question number {i}"}], "max_tokens": 20}


def ideal(server: ProxyWindowServer, start: float) -> float:
    """The soonest ``CALLS`` pass from ``start``: ``rpm - 1`` per clock minute, each taking
    the server's latency, at most ``SLOTS`` in flight (the same concurrency the client has)."""
    quota = FixedWindow(RPM - 1, 60.0, server.quotas["requests"].epoch)
    done: list[float] = []
    t = start
    for i in range(CALLS):
        if i >= SLOTS:
            t = max(t, done[i - SLOTS])
        t += quota.wait(t, 1)
        quota.take(t, 1)
        done.append(t + server.latency)
    return max(done) - start


async def burst(latency: float) -> tuple[ProxyWindowServer, lg.RateLimit, float, float]:
    """``CALLS`` sent at :40 through Retry -> RateLimit(rpm) -> ConcurrencyLimit(SLOTS) to a
    proxy answering each ``latency`` s later, ``remaining`` counting answers: (the server, the
    layer, the wall time, the ideal)."""
    server = ProxyWindowServer(rpm=RPM, latency=latency, capacity=10_000, overload_at=10**9,
                               reports="answered")
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40.0 - server.phase()) % 60)
    layer = lg.RateLimit(rpm=RPM)
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), layer, lg.ConcurrencyLimit(SLOTS))(
        server.acompletion)
    start = loop.time()
    await asyncio.gather(*(guarded(**ask(i)) for i in range(CALLS)))
    return server, layer, loop.time() - start, ideal(server, start)


@pytest.mark.parametrize("latency", [22.0, 27.0])
async def test_a_proxy_answering_the_whole_burst_after_the_minute_uses_the_next_minute(
        latency: float) -> None:
    """1,200 sent at :40, each answered ``latency`` s later (all after the minute), with
    ``remaining`` counting answers: the next minute's quota is used in that minute, within
    1.10x the ideal, at most one 429."""
    server, layer, wall, best = await burst(latency)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.10 * best, (wall, best, layer.statistics().shape)


async def test_a_proxy_answering_before_the_minute_is_learned_in_time() -> None:
    """The same proxy answering 15 s late (answers before the minute, straddling it): the
    clock minute is learned and the next minute used, within 1.10x the ideal, one 429."""
    server, layer, wall, best = await burst(15.0)
    assert layer.statistics().shape.startswith("fixed"), layer.statistics().shape
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.10 * best, (wall, best, layer.statistics().shape)
