"""Batch runner throughput and peak memory: llmguard.batch_iter vs asyncio.gather over a
semaphore vs aiometer.amap, zero-latency fake, concurrency 16.

Each contender runs in its own subprocess (peak RSS = ``ru_maxrss``, which only grows), at
100k and 1M items, to show memory is flat with the item count for a streamed runner.
Usage: python benchmarks/bench_batch.py [--quick]
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


def child(name: str, n: int) -> None:
    fn = {"llmguard.batch_iter": run_llmguard, "gather+Semaphore": run_gather,
          "aiometer.amap": run_aiometer}[name]
    start = time.perf_counter()
    done = asyncio.run(fn(n))
    elapsed = time.perf_counter() - start
    assert done == n, (name, done)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": n / elapsed, "rss": rss_mb, "seconds": elapsed}))


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [10_000, 100_000] if quick else [100_000, 1_000_000]
    rows = []
    for name in ("llmguard.batch_iter", "gather+Semaphore", "aiometer.amap"):
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(n)],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                rows.append((name, n, None))
                print(out.stderr[-500:], file=sys.stderr)
                continue
            rows.append((name, n, json.loads(out.stdout)))
    base = {n: r["rate"] for name, n, r in rows if name == "llmguard.batch_iter" and r}
    print(f"{'runner':22} {'items':>9} {'items/s':>10} {'vs llmguard':>11} {'peak RSS MB':>12} {'s':>6}")
    for name, n, r in rows:
        if r is None:
            print(f"{name:22} {n:>9,} {'failed':>10}")
            continue
        print(f"{name:22} {n:>9,} {r['rate']:>10,.0f} {r['rate'] / base[n]:>10.2f}x "
              f"{r['rss']:>12.0f} {r['seconds']:>6.1f}")
    print("targets: llmguard >= 30,000 items/s, < 200 MB peak, flat from 100k to 1M items")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
