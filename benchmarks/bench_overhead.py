"""Per-call overhead of the composition itself: an empty pipeline and pass-through layers.

Compares, in one run, a bare ``await fn()``, a hand-written async decorator (what a user writes
today), and llmguard pipelines with 0, 1 and 3 pass-through layers. Prints microseconds per call
(median over repeats) and the overhead over the bare await.

    python benchmarks/bench_overhead.py [--calls 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time

import llmguard as lg


async def provider(prompt: str) -> str:
    return prompt


class PassThrough:
    async def __call__(self, call: lg.Call, call_next: lg.Handler):
        return await call_next(call)


def hand_written(fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        return await fn(*args, **kwargs)

    return wrapper


async def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn("hi")
    return (time.perf_counter() - start) / calls * 1e6


async def main(calls: int, repeats: int) -> None:
    contenders = {
        "bare await fn()": provider,
        "hand-written decorator": hand_written(provider),
        "llmguard, empty pipeline": lg.Pipeline().wrap(provider),
        "llmguard, 1 pass-through layer": lg.guard(PassThrough())(provider),
        "llmguard, 3 pass-through layers": lg.guard(PassThrough(), PassThrough(), PassThrough())(
            provider
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):  # interleave contenders so machine noise hits all alike
        for name, fn in contenders.items():
            samples[name].append(await per_call(fn, calls))
    bare = statistics.median(samples["bare await fn()"])
    print(f"{'contender':34} {'us/call':>9} {'overhead us':>12} {'ratio':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:34} {median:9.3f} {median - bare:12.3f} {median / bare:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))
