"""What users already hold, as llmguard parts: an aiolimiter limiter as a layer, a cachetools
cache as a Cache store, side by side with llmguard's own RateLimit and in-memory store.

Run: python benchmarks/bench_adapters.py [--calls N] [--repeats R]
Limiters: µs per admitted call over a bare await; hits: µs per call (a hit makes no provider
call). Medians over repeats; the ratio is to llmguard's own part. What a limiter's overhead
does not show is how much of a quota it uses: see bench_ratelimit.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiolimiter
import cachetools

import llmguard as lg

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is Python?"}]


async def provider(**kwargs):
    await asyncio.sleep(0)
    return {"choices": [{"message": {"role": "assistant", "content": "answer"},
                         "finish_reason": "stop"}], "usage": {"prompt_tokens": 9}}


def timed(loop, fn, calls: int, repeats: int) -> float:
    """Median µs per call of ``await fn(...)`` over ``repeats`` runs of ``calls``."""
    async def run() -> None:
        for i in range(calls):
            await fn(model="m", messages=MSGS)

    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop.run_until_complete(run())
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    bare = timed(loop, provider, args.calls, args.repeats)
    huge = 10**12  # never binding: the cost of the bookkeeping alone
    limiters = {
        "lg.RateLimit(rpm=...)": lg.guard(lg.RateLimit(rpm=huge))(provider),
        "aiolimiter.AsyncLimiter as a layer": lg.guard(aiolimiter.AsyncLimiter(huge, 60))(provider),
    }
    stores = {
        "lg.Cache, in-memory store": lg.Cache(ttl=300),
        "lg.Cache, cachetools.TTLCache store": lg.Cache(ttl=300, store=cachetools.TTLCache(10_000, 300)),
        "lg.Cache, cachetools.LRUCache store": lg.Cache(ttl=300, store=cachetools.LRUCache(10_000)),
    }
    print(f"bare await: {bare:.2f} µs per call; {args.calls} calls, median of {args.repeats}\n")
    print("| limiter, per admitted call | µs over bare | ratio |")
    print("|---|---:|---:|")
    figures = {name: timed(loop, fn, args.calls, args.repeats) - bare
               for name, fn in limiters.items()}
    ours = figures["lg.RateLimit(rpm=...)"]
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} | {value / ours:.2f}x |")
    print("\n| store, per hit (no provider call) | µs per call | ratio |")
    print("|---|---:|---:|")
    hits = {}
    for name, cache in stores.items():
        guarded = lg.guard(cache)(provider)
        loop.run_until_complete(guarded(model="m", messages=MSGS))  # the one miss
        hits[name] = timed(loop, guarded, args.calls, args.repeats)
    ours = hits["lg.Cache, in-memory store"]
    for name, value in hits.items():
        print(f"| {name} | {value:.2f} | {value / ours:.2f}x |")
    loop.close()


if __name__ == "__main__":
    main()
