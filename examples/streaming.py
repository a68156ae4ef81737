"""Streaming through a full pipeline with the offline fake model: the concurrency slot and the
token reservation are held until the stream ends, a failure before the first chunk falls back
(the backup's answer is not cached: it is not the primary's), the recovered primary's completed
stream is cached and replayed, and Metrics times the first chunk (offline)."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    # The primary fails before its first chunk once; the backup streams word by word.
    primary = FakeLLM([ConnectionError("connection reset")], latency=0.05, seconds_per_token=0.01)
    backup = FakeLLM(latency=0.05, seconds_per_token=0.01, reply_prefix="(backup) ")
    metrics = lg.Metrics(name="chat")
    limit = lg.ConcurrencyLimit(2)
    rate = lg.RateLimit(tpm=100_000)
    chat = lg.guard(
        metrics,
        lg.Cache(ttl=300),
        lg.Fallback(backup.stream_message),
        lg.Timeout(first_chunk=5, idle=2, total=60),
        rate,
        limit,
    )(primary.stream_message)

    for attempt in ("first (the backup)", "second (the primary)", "third (from the cache)"):
        print(f"{attempt}: ", end="")
        async for chunk in chat("tell me a short story about rate limits"):
            print(chunk, end="", flush=True)
            assert limit.statistics().in_flight <= 1  # held while the consumer reads
        print()

    stats = metrics.statistics()
    print(f"in flight after the streams: {limit.statistics().in_flight}, "
          f"tokens reserved: {rate.statistics().reserved_tokens}")
    print(f"calls: {stats.calls}, fallbacks: {stats.fallbacks}, cache hits: {stats.cache_hits}")
    assert limit.statistics().in_flight == 0 and rate.statistics().reserved_tokens == 0
    assert stats.fallbacks == 1 and stats.cache_hits == 1


if __name__ == "__main__":
    asyncio.run(main())
