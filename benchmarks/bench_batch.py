"""Batch runner throughput and peak memory: llmguard.batch_iter vs asyncio.gather over a
semaphore vs aiometer.amap, zero-latency fake, concurrency 16.

Each contender runs in its own subprocess (peak RSS = ``ru_maxrss``, which only grows), at
100k and 1M items, to show memory is flat with the item count for a streamed runner.

"+ stack" rows put the README's recommended 8-layer stack (Metrics, Cache, Fallback, Retry,
CircuitBreaker, Timeout, RateLimit, ConcurrencyLimit; quotas that never bind) around the fake:
``lg.batch`` (every Outcome kept, as a user holding the list does), ``lg.batch`` with
``keep_records=True`` (each Outcome also keeps its call records), ``lg.batch_iter`` and
aiometer over the same stack.
The stack's quotas never bind (rpm=100M): the worst case for RateLimit's sliding log, which
keeps each admission for a window (folded into per-second counts past a few thousand).

Usage: python benchmarks/bench_batch.py [--quick] [--sizes 1000,10000] [--only "lg.batch + stack"]
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time

CONCURRENCY = 16


async def fake(x: int) -> int:
    return x


async def backup(x: int) -> int:
    return x


def stack():  # type: ignore[no-untyped-def]
    import llmguard as lg

    return (lg.Pipeline(name="chat").metrics(provider="openai", model="gpt-4o-mini")
            .cache(ttl=300, maxsize=10_000).fallback(backup).retry(attempts=3).circuit_breaker()
            .timeout(30).rate_limit(rpm=100_000_000, tpm=10**12).concurrency_limit(100)
            .wrap(fake))


async def run_batch_stack(n: int, keep_records: bool = False) -> int:
    import llmguard as lg

    outcomes = await lg.batch(stack(), range(n), concurrency=CONCURRENCY, progress=False,
                              keep_records=keep_records)
    return sum(o.ok for o in outcomes)


async def run_batch_keep(n: int) -> int:
    return await run_batch_stack(n, keep_records=True)


async def run_iter_stack(n: int) -> int:
    import llmguard as lg

    count = 0
    async for outcome in lg.batch_iter(stack(), range(n), concurrency=CONCURRENCY,
                                       progress=False):
        count += outcome.ok
    return count


async def run_aiometer_stack(n: int) -> int:
    import aiometer

    count = 0
    async with aiometer.amap(stack(), range(n), max_at_once=CONCURRENCY) as results:
        async for _ in results:
            count += 1
    return count


async def run_llmguard(n: int) -> int:
    import llmguard as lg

    count = 0
    async for outcome in lg.batch_iter(fake, range(n), concurrency=CONCURRENCY, progress=False):
        count += outcome.ok
    return count


async def run_gather(n: int) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(x: int) -> int:
        async with sem:
            return await fake(x)

    return len(await asyncio.gather(*(one(x) for x in range(n)), return_exceptions=True))


async def run_aiometer(n: int) -> int:
    import aiometer

    count = 0
    async with aiometer.amap(fake, range(n), max_at_once=CONCURRENCY) as results:
        async for _ in results:
            count += 1
    return count


CONTENDERS = {"llmguard.batch_iter": run_llmguard, "gather+Semaphore": run_gather,
              "aiometer.amap": run_aiometer, "lg.batch + stack": run_batch_stack,
              "lg.batch + stack, keep_records": run_batch_keep,
              "lg.batch_iter + stack": run_iter_stack, "aiometer.amap + stack": run_aiometer_stack}


def child(name: str, n: int) -> None:
    fn = CONTENDERS[name]
    start = time.perf_counter()
    done = asyncio.run(fn(n))
    elapsed = time.perf_counter() - start
    assert done == n, (name, done)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": n / elapsed, "rss": rss_mb, "seconds": elapsed}))


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [10_000, 100_000] if quick else [100_000, 1_000_000]
    if "--sizes" in sys.argv:
        sizes = [int(n) for n in sys.argv[sys.argv.index("--sizes") + 1].split(",")]
    names = list(CONTENDERS)
    if "--only" in sys.argv:
        names = sys.argv[sys.argv.index("--only") + 1].split(",")
    rows = []
    for name in names:
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(n)],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                rows.append((name, n, None))
                print(out.stderr[-500:], file=sys.stderr)
                continue
            rows.append((name, n, json.loads(out.stdout)))
    base = {n: r["rate"] for name, n, r in rows if name == "llmguard.batch_iter" and r}
    if not base:  # --only without the baseline: ratios to the first row
        base = {n: r["rate"] for name, n, r in rows if name == names[0] and r}
    print(f"{'runner':32} {'items':>9} {'items/s':>10} {'vs llmguard':>11} {'peak RSS MB':>12} {'s':>6}")
    for name, n, r in rows:
        if r is None:
            print(f"{name:32} {n:>9,} {'failed':>10}")
            continue
        print(f"{name:32} {n:>9,} {r['rate']:>10,.0f} {r['rate'] / base[n]:>10.2f}x "
              f"{r['rss']:>12.0f} {r['seconds']:>6.1f}")
    print("targets: llmguard >= 30,000 items/s, < 200 MB peak, flat from 100k to 1M items; "
          "1M items through lg.batch + stack <= 150 MB peak (#36)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
