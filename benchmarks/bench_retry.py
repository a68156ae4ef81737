"""Retry: per-call overhead on the success path, and behaviour under 429s with Retry-After.

1. Overhead: microseconds per successful call added by llmguard's Retry, tenacity and stamina
   (median over repeats, one run, side by side).
2. The issue's scenario: a provider failing 30% of calls with 429 + ``Retry-After: 2``, which it
   enforces (a retry of that request sooner gets another 429, as a real rate limiter would).
   1,000 calls, 10 attempts each (enough for all to succeed), in virtual time: llmguard Retry (honours Retry-After) vs
   tenacity's exponential backoff (0.5 s doubling) and tenacity with random exponential jitter:
   successes, total attempts, 429s, makespan.
3. A strict 600 RPM quota receiving 1,000 calls at 130% of it: every caller is told about the
   same Retry-After, so any client-side retry sends 429s there (Retry spreads them with equal
   jitter and comes out about even with tenacity); the stack llmguard recommends, Retry over
   RateLimit(rpm=600), never sends them.

    python benchmarks/bench_retry.py
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import looptime
import stamina
import tenacity

import llmguard as lg
from llmguard.testing import RateLimited, SimulatedProvider
from llmguard.testing._provider import ProviderError

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


class FlakyProvider:
    """Fails ``rate`` of calls with 429 + Retry-After and rejects a retry that comes sooner."""

    def __init__(self, rate: float = 0.3, retry_after: float = 2.0, seed: int = 7) -> None:
        self.rate, self.retry_after = rate, retry_after
        self.rng = random.Random(seed)
        self.until: dict[str, float] = {}  # request -> time before which it is refused
        self.rejected = 0

    async def send_message(self, prompt: str) -> str:
        now = asyncio.get_running_loop().time()
        wait = self.until.get(prompt, 0.0) - now
        if wait <= 0 and self.rng.random() < self.rate:
            self.until[prompt] = now + self.retry_after
            wait = self.retry_after
        if wait > 0:
            self.rejected += 1
            raise RateLimited("429 rate limited", status_code=429,
                              headers={"retry-after": f"{wait:.3f}"})
        await asyncio.sleep(0.5)
        return prompt


def retrying(kind: str, call, tries: int, **rate_limit: int):
    if kind.startswith("llmguard"):
        layers = [lg.Retry(attempts=tries, backoff=0.5, max_delay=60)]
        if rate_limit:
            layers.append(lg.RateLimit(**rate_limit))
        return lg.guard(*layers)(call)
    wait = (tenacity.wait_random_exponential(multiplier=0.5, max=60) if "random" in kind
            else tenacity.wait_exponential(multiplier=0.5, max=60))
    return tenacity.retry(stop=tenacity.stop_after_attempt(tries), wait=wait,
                          retry=tenacity.retry_if_exception_type(ProviderError),
                          reraise=True)(call)


def run(kind: str, send, arrivals_per_second: float, tries: int,
        **rate_limit: int) -> tuple[int, int, float]:
    """1,000 calls arriving at ``arrivals_per_second``: (successes, attempts, makespan)."""
    attempts = 0

    async def call(i: int) -> str:
        nonlocal attempts
        attempts += 1
        return await send(f"prompt {i}")

    fn = retrying(kind, call, tries, **rate_limit)

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()

        async def one(i: int) -> bool:
            await asyncio.sleep(i / arrivals_per_second)
            try:
                await fn(i)
                return True
            except ProviderError:
                return False

        results = await asyncio.gather(*(one(i) for i in range(1000)))
        return sum(results), loop.time()

    loop = looptime.new_event_loop(start=0, noop_cycles=1000)
    try:
        ok, makespan = loop.run_until_complete(main())
    finally:
        loop.close()
    return ok, attempts, makespan


def table(title: str, rows: dict[str, tuple[int, int, int, float]]) -> None:
    print(f"{title:34} {'ok':>5} {'attempts':>9} {'429s':>6} {'makespan s':>11}")
    for kind, (ok, attempts, rejected, makespan) in rows.items():
        print(f"{kind:34} {ok:5d} {attempts:9d} {rejected:6d} {makespan:11.1f}")
    print()


def flaky() -> None:
    rows = {}
    for kind in ("llmguard Retry", "tenacity exponential", "tenacity random exponential"):
        provider = FlakyProvider()
        ok, attempts, makespan = run(kind, provider.send_message, 20, tries=10)
        rows[kind] = (ok, attempts, provider.rejected, makespan)
    table("30% 429 + Retry-After 2 s, 10 att.", rows)


def quota() -> None:
    rows = {}
    for kind, limits in (("llmguard Retry", {}), ("tenacity exponential", {}),
                         ("llmguard Retry + RateLimit", {"rpm": 600})):
        sim = SimulatedProvider(rpm=600, latency=0.5)
        ok, attempts, makespan = run(kind, sim.send_message, 13, 8, **limits)  # 780/min vs 600
        rows[kind] = (ok, attempts, sim.statistics().rate_limited, makespan)
    table("130% of a 600 RPM quota, 8 att.", rows)


if __name__ == "__main__":
    asyncio.run(overhead())
    print()
    flaky()
    quota()
