"""A server that enforces the per-minute quota over a shorter window (OpenAI: per-minute limits
may be enforced per second), saying so in its headers: ``refill="auto"`` paces it about as the
sliding log (``refill="window"``) does, with and without ``burst`` (virtual time)."""

import asyncio
import random
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.learn import shorter
from llmguard.testing import FixedWindowServer, SlidingWindowServer, TokenBucketServer

SERVERS = {"fixed": FixedWindowServer, "bucket": TokenBucketServer,
           "sliding": SlidingWindowServer}


def requests(n: int) -> list[dict[str, Any]]:
    rng = random.Random(42)
    return [{"model": "sim", "max_tokens": rng.randint(20, 120), "messages": [
        {"role": "user", "content": f"#{i} " + "word " * rng.randint(5, 120)}]}
        for i in range(n)]


async def paced(kind: str, refill: str, burst: float | None) -> tuple[float, Any, Any]:
    """1,000 requests at once through Retry, RateLimit(rpm=2400, tpm=300_000, per minute) and
    ConcurrencyLimit(32), against a ``kind`` server of 240 requests / 30,000 tokens per 6 s,
    started 2.5 s into its window: the wall time, the server and the RateLimit layer."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep((2.5 - loop.time()) % 6)
    server = SERVERS[kind](latency=0.05, seconds_per_output_token=0.0005, rpm=240, tpm=30_000,
                           window=6, output_tokens=lambda rng, kw: rng.randint(10, 120))
    pipeline = (lg.Pipeline(name="short").retry(attempts=6)
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
@pytest.mark.parametrize("kind", sorted(SERVERS))
async def test_auto_no_slower_than_the_log_on_a_shorter_window(kind: str,
                                                                burst: float | None) -> None:
    """Under ``refill="auto"`` the server's 240 of our 2,400 with resets within 6 s is read as
    a shorter window, not as a minute of 240 (which stalled a fixed window at 17x the ideal):
    the wall time is within 15% of the sliding log's."""
    auto, _, layer = await paced(kind, "auto", burst)
    log, _, _ = await paced(kind, "window", burst)
    assert auto <= 1.15 * log, (auto, log, layer)
    assert "shorter window" in repr(layer)


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
