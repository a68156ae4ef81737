"""A server that enforces the per-minute quota over a shorter window (OpenAI: per-minute limits
may be enforced per second), saying so in its headers: ``refill="auto"`` learns that window and
paces over it in the server's own shape; a server that admits less over our own window (a
bucket of 100 read by ``rpm=300``) is told apart from it over several readings (virtual time)."""

import asyncio
import random
from collections import deque
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.learn import shorter
from llmguard._admission.ratelimit.short import Short, fits_ours
from llmguard.testing import FixedWindowServer, SlidingWindowServer, TokenBucketServer
from llmguard.testing._quota import FixedWindow, TokenBucket

SERVERS = {"fixed": FixedWindowServer, "bucket": TokenBucketServer,
           "sliding": SlidingWindowServer}


def requests(n: int) -> list[dict[str, Any]]:
    rng = random.Random(42)
    return [{"model": "sim", "max_tokens": rng.randint(20, 120), "messages": [
        {"role": "user", "content": f"#{i} " + "word " * rng.randint(5, 120)}]}
        for i in range(n)]


async def paced(kind: str, refill: str, burst: float | None, phase: float = 2.5,
                seed: int = 1) -> tuple[float, Any, Any]:
    """1,000 requests at once through Retry, RateLimit(rpm=2400, tpm=300_000, per minute) and
    ConcurrencyLimit(32), against a ``kind`` server of 240 requests / 30,000 tokens per 6 s,
    started ``phase`` s into the clock minute (and its 6 s window), the server's draws and
    Retry's jitter from ``seed``: the wall time, the server and the RateLimit layer."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - loop.time()) % 60)
    server = SERVERS[kind](latency=0.05, seconds_per_output_token=0.0005, rpm=240, tpm=30_000,
                           window=6, output_tokens=lambda rng, kw: rng.randint(10, 120),
                           seed=seed)
    pipeline = (lg.Pipeline(name="short").retry(attempts=6, seed=seed)
                .rate_limit(rpm=2400, tpm=300_000, burst=burst, margin=0.05, refill=refill)
                .concurrency_limit(32))
    layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
    server.on_headers.append(layer.observe_headers)
    send = pipeline.wrap(server.acompletion)
    start = loop.time()
    results = await asyncio.gather(*(send(**r) for r in requests(1000)))
    assert len(results) == 1000
    return loop.time() - start, server, layer


@pytest.mark.parametrize("burst", [0.1, None])
@pytest.mark.parametrize("kind", ["bucket", "fixed"])
async def test_auto_no_slower_than_the_log_on_a_shorter_window(kind: str,
                                                                burst: float | None) -> None:
    """Under ``refill="auto"`` the server's 240 of our 2,400 with resets within 6 s is read as
    a shorter window, not as a minute of 240 (which stalled a fixed window at 17x the ideal):
    the wall time is within 15% of the sliding log's."""
    auto, _, layer = await paced(kind, "auto", burst)
    log, _, _ = await paced(kind, "window", burst)
    assert auto <= 1.15 * log, (auto, log, layer)
    assert "over 6 s windows" in repr(layer) and "over 6 s windows" in layer.statistics().shape


@pytest.mark.parametrize("seed", [1, 3, 7])
@pytest.mark.parametrize("phase", [2.5, 33.0])
@pytest.mark.parametrize("burst", [0.1, None])
async def test_a_shorter_sliding_window_is_learned_as_sliding_from_any_phase(
        burst: float | None, phase: float, seed: int) -> None:
    """A sliding 6 s window is learned as one, whatever the phase of the minute the burst
    starts at and the server's and Retry's draws, and paced no slower than the sliding log
    (within 15%). The shorter window's new tracks count ours from its adoption on, while the
    server still counts ours sent within a window before it: read from those tracks alone,
    the first burst after a pause within a window of adoption (seeds 3 and 7, every phase)
    had the server's reset, one window after one of those, point to a boundary before our
    oldest leaves: a fixed window learned, 1.08-1.25x the log."""
    auto, _, layer = await paced("sliding", "auto", burst, phase, seed)
    log, _, _ = await paced("sliding", "window", burst, phase, seed)
    assert layer.statistics().shape.startswith("sliding"), layer.statistics().shape
    assert "over 6 s windows" in repr(layer)
    assert auto <= 1.15 * log, (auto, log, layer)


def ideal(kind: str, charges: list[int], start: float) -> float:
    """Seconds from ``start`` until the last of these requests (their charges, in order) is
    answered at the soonest a ``kind`` server of 240 requests / 30,000 tokens per 6 s admits
    them (greedy, plus one mean service time)."""
    t, service = start, 0.05 + 0.0005 * 65
    if kind == "sliding":
        admitted: deque[tuple[float, int]] = deque()
        used = 0
        for charge in charges:
            while True:
                while admitted and admitted[0][0] + 6 <= t:
                    used -= admitted.popleft()[1]
                if len(admitted) < 240 and used + charge <= 30_000:
                    break
                t = admitted[0][0] + 6
            admitted.append((t, charge))
            used += charge
        return t - start + service
    quotas = ((TokenBucket(240, 6), TokenBucket(30_000, 6)) if kind == "bucket"
              else (FixedWindow(240, 6), FixedWindow(30_000, 6)))
    for charge in charges:
        for _ in range(3):  # a wait on one quota may need one more on the other
            wait = max(q.wait(t, n) for q, n in zip(quotas, (1, charge)))
            if wait <= 0:
                break
            t += wait + 1e-9
        for q, n in zip(quotas, (1, charge)):
            q.take(t, n)
    return t - start + service


@pytest.mark.parametrize("kind", sorted(SERVERS))
async def test_the_shorter_window_learned_paces_near_the_servers_ideal(kind: str) -> None:
    """With ``burst=0.1`` (``llmguard run``'s 10,000-line table): once its readings show the
    quota over 6 s windows, a track of 240 / 30,000 over 6 s learns the server's shape there
    (the sliding log of our minute, capped by what it said, ran 1.10x a fixed window and 1.18x
    a bucket): within 3% of the server's ideal, no 429."""
    wall, server, layer = await paced(kind, "auto", 0.1)
    stats = server.statistics()
    charges = [server.charge(**r) for r in requests(1000)]
    assert stats.rate_limited == 0
    assert stats.last_completion - stats.first_arrival <= 1.03 * ideal(
        kind, charges, stats.first_arrival), (wall, layer)
    assert layer.statistics().shape.startswith(kind), layer.statistics().shape


async def test_an_over_declared_quota_against_a_bucket_learns_its_limit_without_429s() -> None:
    """``rpm=300`` against a token bucket of 100 a minute (with headers), 300 calls over
    ConcurrencyLimit(32): the bucket's readings within 20 s (100 is a third of 300) fit a
    shorter window too, but their resets rise with what is missing as only a bucket of 100 a
    minute's do, so its limit is learned; the 268 calls admitted at once and queued below are
    counted once as each leaves the queue. Before: 8 429s (2.6%); 242 s (2x the ideal) without
    the shorter-window reading; 130 s as a sliding log (``refill="window"``)."""
    async def run(refill: str) -> tuple[float, Any, lg.RateLimit]:
        server = TokenBucketServer(rpm=100, latency=0.5)
        layer = lg.RateLimit(rpm=300, refill=refill)
        server.on_headers.append(layer.observe_headers)
        send = lg.guard(lg.Retry(attempts=6), layer, lg.ConcurrencyLimit(32))(server.acompletion)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(send(messages=[{"role": "user", "content": f"question {i}"}],
                                    max_tokens=200) for i in range(300)))
        return loop.time() - start, server, layer

    auto, server, layer = await run("auto")
    log, _, _ = await run("window")
    stats = server.statistics()
    assert stats.rate_limited <= 0.01 * stats.arrivals
    assert auto <= log, (auto, log)
    assert auto <= 1.05 * server.ideal_time(300), auto
    assert layer.statistics().requests_limit == 100
    assert layer.statistics().shape.startswith("bucket")


def test_a_bucket_of_ours_is_told_from_a_shorter_window_over_several_readings() -> None:
    """A bucket of 100 a minute read by ``rpm=300``: resets ``(100 - remaining) * 0.6 s`` all
    fit one of ours, the first few too near full to tell (none), and a lower limit is shown
    only once they span twice what one reading's tolerance covers. A 6 s fixed window of
    2,400 read by ``rpm=24000``: a burst whose readings cross the band a bucket of ours allows
    never shows one (its resets fall as ours rise); readings no bucket of ours gives, with a
    boundary that moved, show the shorter window."""
    minute = type("Track", (), {"limit": 300, "window": 60.0})()
    assert fits_ours(100, 99, 0.6, 60.0) is None and fits_ours(100, 69, 18.6, 60.0) is True
    assert fits_ours(100, 95, 9.0, 60.0) is False
    state, verdicts = Short(), []
    for remaining in (99, 97, 93, 85, 78):
        verdicts.append(state.read(0.5, minute, False, 100, remaining,
                                   (100 - remaining) * 0.6, 0.0))
    assert verdicts == [None, None, None, None, "lower"]

    per_minute = type("Track", (), {"limit": 24_000, "window": 60.0})()
    state, verdicts = Short(), []
    for i in range(120):  # 400 a second from 1.5 s before the boundary at 6.0
        at = 4.5 + i / 400
        verdicts.append(state.read(at, per_minute, False, 2400, 2300 - 2 * i, 6.0 - at, at))
    for i in range(40):  # the next window: back up at once, its boundary 6 s on
        at = 6.0 + i / 400
        verdicts.append(state.read(at, per_minute, False, 2400, 2400 - i, 12.0 - at, at))
    assert "lower" not in verdicts and verdicts[-1] == "shorter"


def test_shorter_reads_a_share_of_our_rate_only() -> None:
    """A limit at most half ours that resets within its share of our window (plus the
    tolerance) is a shorter window; a reset beyond it, or a limit near ours (a clock-minute
    proxy's ``rpm - 1``), is a minute's."""
    track = type("Track", (), {"limit": 24_000, "window": 60.0})()
    assert shorter(track, 2400, 5.9)
    assert not shorter(track, 2400, 30.0)
    assert not shorter(track, 23_999, 5.9)
    assert not shorter(track, 2400, None)
    assert not shorter(track, None, 5.9)
