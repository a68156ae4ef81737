"""Retry: per-call overhead on the success path, and behaviour under a 429 storm.

1. Overhead: microseconds per successful call added by llmguard's Retry, tenacity and stamina
   (median over repeats, one run, side by side).
2. A provider with a strict 600 RPM quota receiving 1,000 calls at 130% of it (so ~30% of first
   attempts are 429s with Retry-After), in virtual time: llmguard Retry (honours Retry-After) vs
   tenacity's exponential backoff, 8 attempts each: successes, total attempts, 429s, makespan;
   and the stack llmguard recommends, Retry over RateLimit(rpm=600), which never sends the 429s.

    python benchmarks/bench_retry.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import looptime
import stamina
import tenacity

import llmguard as lg
from llmguard.testing import RateLimited, SimulatedProvider

CALLS = 50_000


async def provider(prompt: str) -> str:
    return prompt


def contenders() -> dict[str, object]:
    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())
    async def with_tenacity(prompt: str) -> str:
        return await provider(prompt)

    @stamina.retry(on=Exception, attempts=3)
    async def with_stamina(prompt: str) -> str:
        return await provider(prompt)

    return {
        "bare await": provider,
        "llmguard Retry": lg.guard(lg.Retry(attempts=3))(provider),
        "tenacity @retry": with_tenacity,
        "stamina @retry": with_stamina,
    }


async def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn("x")
    return (time.perf_counter() - start) / calls * 1e6


async def overhead(repeats: int = 5) -> None:
    fns = contenders()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(await per_call(fn, CALLS))
    bare = statistics.median(samples["bare await"])
    ours = statistics.median(samples["llmguard Retry"]) - bare
    print(f"{'success path':18} {'us/call':>8} {'overhead us':>12} {'vs llmguard':>12}")
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = (median - bare) / ours if name != "bare await" else 0
        print(f"{name:18} {median:8.2f} {median - bare:12.2f} {ratio:11.1f}x")


def storm(kind: str) -> tuple[int, int, int, float]:
    sim = SimulatedProvider(rpm=600, latency=0.5)
    attempts = 0

    async def call(i: int) -> str:
        nonlocal attempts
        attempts += 1
        return await sim.send_message(f"prompt {i}")

    if kind == "llmguard":
        fn = lg.guard(lg.Retry(attempts=8, backoff=0.5, max_delay=60))(call)
    elif kind == "llmguard + RateLimit":
        fn = lg.guard(lg.Retry(attempts=8, backoff=0.5, max_delay=60),
                      lg.RateLimit(rpm=600))(call)
    else:
        fn = tenacity.retry(stop=tenacity.stop_after_attempt(8),
                            wait=tenacity.wait_exponential(multiplier=0.5, max=60),
                            retry=tenacity.retry_if_exception_type(RateLimited),
                            reraise=True)(call)

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()

        async def one(i: int) -> bool:
            await asyncio.sleep(i / 13)  # 13 calls/s = 780/min against a 600/min quota
            try:
                await fn(i)
                return True
            except RateLimited:
                return False

        results = await asyncio.gather(*(one(i) for i in range(1000)))
        return sum(results), loop.time()

    loop = looptime.new_event_loop(start=0, noop_cycles=1000)
    try:
        ok, makespan = loop.run_until_complete(main())
    finally:
        loop.close()
    return ok, attempts, sim.statistics().rate_limited, makespan


if __name__ == "__main__":
    asyncio.run(overhead())
    print()
    print(f"{'1,000 calls at 130% of 600 RPM':32} {'ok':>5} {'attempts':>9} {'429s':>6} "
          f"{'makespan s':>11}")
    for kind in ("llmguard", "tenacity", "llmguard + RateLimit"):
        ok, attempts, rejected, makespan = storm(kind)
        print(f"{kind + ' (8 attempts)':32} {ok:5d} {attempts:9d} {rejected:6d} {makespan:11.1f}")
