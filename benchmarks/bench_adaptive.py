"""Adaptive concurrency against static limits and the seed's batch-based scheme, in virtual time.

A closed system of 256 clients calls a ``SimulatedProvider`` (capacity C calls at full speed,
latency stretching beyond it, 503s beyond 2C in flight) for 300 simulated seconds. Each contender
is a concurrency policy in front of the provider. Printed per scenario: successful calls/s as %
of the provider's ideal (C / latency), p50/p99 provider latency, error rate, and for the capacity
change scenario the seconds until throughput is back within 10% of the new optimum.

Runs on looptime's fast-forward event loop, so 300 simulated seconds take a few real seconds.

    python benchmarks/bench_adaptive.py
"""

from __future__ import annotations

import asyncio
import random
import statistics

import looptime

import llmguard as lg
from llmguard.testing import SimulatedProvider

DURATION = 300.0
CLIENTS = 256
LATENCY = 1.0


def output_tokens(rng: random.Random, kwargs: dict) -> int:
    return rng.randint(20, 400)


class Run:
    """Counts what the clients saw: successes (with provider latency) and errors."""

    def __init__(self, provider: SimulatedProvider) -> None:
        self.provider = provider
        self.latencies: list[float] = []
        self.done_at: list[float] = []
        self.errors = 0

    async def call(self, send, i: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await send(messages=[{"role": "user", "content": str(i)}])
        except Exception:
            self.errors += 1
            await asyncio.sleep(1.0)  # the client backs off before its next request
            return
        self.latencies.append(result["latency"])
        self.done_at.append(loop.time())


def timed(provider: SimulatedProvider):
    """The provider call, returning its own latency (admission wait excluded)."""

    async def send(**kwargs):
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await provider.acompletion(**kwargs)
        return {**result, "latency": loop.time() - start}

    return send


async def closed_loop(run: Run, send) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DURATION

    async def client(n: int) -> None:
        i = n
        while loop.time() < end:
            await run.call(send, i)
            i += CLIENTS

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))


async def seed_batches(run: Run, send) -> None:
    """The seed's AdaptiveConcurrency: gather fixed batches, +1 if fast, -1 if slow."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DURATION
    concurrency, i = 2, 0
    while loop.time() < end:
        start = loop.time()
        await asyncio.gather(*(run.call(send, i + k) for k in range(concurrency)))
        i += concurrency
        avg = (loop.time() - start) / concurrency
        if avg < 0.5:
            concurrency = min(concurrency + 1, 10)
        elif avg > 2.0:
            concurrency = max(concurrency - 1, 1)


def contenders(capacity: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, limit in (("too low", capacity // 2), ("right", capacity),
                         ("too high", capacity * 4)):
        out[f"static {limit} ({label})"] = lambda limit=limit: lg.ConcurrencyLimit(limit)
    for algorithm in ("gradient", "gradient2", "vegas", "aimd"):
        out[f"adaptive {algorithm}"] = lambda a=algorithm: lg.AdaptiveConcurrency(algorithm=a)
    out["seed batch scheme"] = None
    return out


def simulate(capacity: int, make_layer, change: bool, variable_tokens: bool) -> tuple:
    provider = SimulatedProvider(
        capacity=capacity,
        latency=0.5 if variable_tokens else LATENCY,
        seconds_per_output_token=0.0025 if variable_tokens else 0.0,
        output_tokens=output_tokens if variable_tokens else 64,
    )
    run = Run(provider)

    async def main() -> None:
        if change:
            async def shift() -> None:
                await asyncio.sleep(100)
                provider.capacity = capacity // 4
                await asyncio.sleep(100)
                provider.capacity = capacity
            asyncio.get_running_loop().create_task(shift())
        send = timed(provider)
        if make_layer is None:
            await seed_batches(run, send)
        else:
            await closed_loop(run, lg.guard(make_layer())(send))

    loop = looptime.new_event_loop(start=0, noop_cycles=1000)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return run


def recovery(run: Run, at: float, optimum: float, window: float = 5.0) -> float:
    """Seconds after ``at`` until a ``window``-long throughput is within 10% of ``optimum``."""
    times = sorted(t for t in run.done_at if t >= at)
    t = at
    while t < at + 100:
        rate = sum(1 for x in times if t <= x < t + window) / window
        if rate >= 0.9 * optimum:
            return t + window - at
        t += 1.0
    return float("inf")


def report(title: str, capacity: int, change: bool = False, variable: bool = False) -> None:
    ideal = capacity / (0.5 + 0.0025 * 210 if variable else LATENCY)
    print(f"\n{title}")
    header = f"{'contender':28} {'ok/s %ideal':>11} {'p50 s':>7} {'p99 s':>7} {'errors %':>9}"
    print(header + ("  recover@16 s  recover@64 s" if change else ""))
    for name, make in contenders(capacity).items():
        run = simulate(capacity, make, change, variable)
        total = len(run.latencies) + run.errors
        q = statistics.quantiles(run.latencies, n=100) if len(run.latencies) > 1 else [0] * 99
        ok = sum(1 for t in run.done_at if t <= DURATION)  # calls still queued at the end: out
        line = (f"{name:28} {100 * ok / DURATION / ideal:11.1f} "
                f"{q[49]:7.2f} {q[98]:7.2f} {100 * run.errors / max(total, 1):9.2f}")
        if change:
            low = recovery(run, 100, ideal / 4)
            high = recovery(run, 200, ideal)
            line += f"  {low:12.0f}  {high:12.0f}"
        print(line)


if __name__ == "__main__":
    for capacity in (4, 16, 64):
        report(f"capacity {capacity}, latency {LATENCY:g} s", capacity)
    report("capacity 64 -> 16 at t=100 s -> 64 at t=200 s (ok/s over the whole run)", 64,
           change=True)
    report("capacity 16, output 20-400 tokens at 2.5 ms/token (latency varies 0.55-1.5 s)", 16,
           variable=True)
