"""Soak: an hour of virtual time at steady load through a full pipeline; is memory flat?

The pipeline is the recommended stack, outermost first: Metrics, Cache, Fallback (to a smaller
model), Retry (with a budget), CircuitBreaker, Timeout, a global RateLimit (rpm + tpm), a
per-user RateLimit (``key=`` the ``user`` argument), ConcurrencyLimit(96) (``--adaptive``:
AdaptiveConcurrency, which must ride out the storms and sporadic errors), then ``Faults``
(errors, latency spikes, hangs, a 10 s 429 storm every 5 minutes) around a
``SimulatedProvider`` (capacity, queueing latency, its own rpm quota).

A producer starts ``rate`` calls per virtual second (open loop: arrivals do not wait for
answers; beyond ``max_outstanding`` unfinished calls an arrival is shed and counted). Prompts
are mostly distinct (the cache fills to ``maxsize`` and must evict) with a hot set that repeats
(hits). Users churn: each minute 20 new users arrive and 20 go quiet, as on a real service, so a
per-key structure that never forgets a key grows for the whole run.

Every 5 virtual minutes a row shows throughput, outcomes, latency, the Python heap (tracemalloc,
after a full collection), RSS, and the size of every structure that could grow. The verdict
compares the heap at minute 10 and minute 60 and gives the throughput's coefficient of variation.
Time is virtual (looptime), so the hour runs in a minute or two of real time:

    python benchmarks/soak.py                 # 60 virtual minutes at 30 calls/s
    python benchmarks/soak.py --minutes 20 --rate 10 --adaptive
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import looptime

import llmguard as lg
from llmguard.testing import Faults, SimulatedProvider

#: Seconds of virtual time between two rows of the table.
REPORT_EVERY = 300.0
HOT_PROMPTS = 200  # the repeated prompts (cache hits once warm)
ACTIVE_USERS = 200  # users active at any moment; 20 of them are replaced every minute


@dataclass(frozen=True)
class Row:
    minute: int
    completed: int
    throughput: float
    ok: int
    errors: int
    shed: int
    p50: float | None
    heap_mb: float
    rss_mb: float
    cache_size: int
    limiter_keys: int
    series: int
    tasks: int


def rss_mb() -> float:
    """Current (not peak) resident set size, from /proc; 0.0 where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def build(seed: int, adaptive: bool = False) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The guarded call and the layers whose state the table reports."""
    provider = SimulatedProvider(
        capacity=128, latency=0.5, seconds_per_output_token=0.005, rpm=3000, seed=seed,
        output_tokens=lambda rng, kwargs: rng.randint(20, 300),
    )
    parts = {
        "metrics": lg.Metrics(name="soak"),
        "cache": lg.Cache(ttl=600, maxsize=5_000),
        "retry": lg.Retry(attempts=4, backoff=0.5, max_delay=20, budget=0.3, seed=seed),
        "global_limit": lg.RateLimit(rpm=2_700, tpm=2_000_000),
        "user_limit": lg.RateLimit(rpm=30, key=lambda **kw: kw["user"]),
        "concurrency": (lg.AdaptiveConcurrency(initial=32, max=256) if adaptive
                        else lg.ConcurrencyLimit(96)),
        "faults": Faults(error_rate=0.03, spike_rate=0.01, spike=8.0, hang_rate=0.001,
                         storm_every=REPORT_EVERY, storm_for=10.0, seed=seed),
    }
    pipeline = lg.Pipeline(
        parts["metrics"], parts["cache"], lg.Fallback({"model": "small"}), parts["retry"],
        lg.CircuitBreaker(min_calls=50, window=30, open_for=10), lg.Timeout(15),
        parts["global_limit"], parts["user_limit"], parts["concurrency"], parts["faults"],
        name="soak",
    )
    return pipeline.wrap(provider.acompletion), parts


def snapshot(parts: dict[str, Any]) -> tuple[int, int, int]:
    """Sizes of the structures that grow with distinct inputs: cache entries, rate-limiter keys
    (both limiters), Metrics series (a private field: this is a leak hunt)."""
    keys = sum(parts[name].backend.tracked_keys for name in ("global_limit", "user_limit"))
    return parts["cache"].statistics().size, keys, len(parts["metrics"]._series)


async def soak(*, minutes: int = 60, rate: float = 30.0, max_outstanding: int = 3_000,
               seed: int = 0, report_every: float = REPORT_EVERY, adaptive: bool = False,
               out: Callable[[Row], None] | None = None) -> list[Row]:
    """Run the scenario for ``minutes`` of loop time; return (and pass to ``out``) one row per
    ``report_every`` seconds. Must run on a looptime loop to finish in reasonable real time."""
    guarded, parts = build(seed, adaptive)
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    outstanding: set[asyncio.Task[Any]] = set()
    counts = {"ok": 0, "errors": 0, "shed": 0}
    rows: list[Row] = []

    async def one(i: int, now: float) -> None:
        hot = rng.random() < 0.2
        prompt = f"hot question {rng.randrange(HOT_PROMPTS)}" if hot else f"question {i}"
        user = f"user{int(now // 60) * 20 + rng.randrange(ACTIVE_USERS)}"
        try:
            await guarded(model="large", user=user, max_tokens=300,
                          messages=[{"role": "user", "content": prompt}])
            counts["ok"] += 1
        except Exception:
            counts["errors"] += 1

    async def produce() -> None:
        tick = 0.1  # start the arrivals of each 100 ms together: fewer timers, same rate
        per_tick = rate * tick
        owed = 0.0
        i = 0
        end = minutes * 60
        while (now := loop.time()) < end:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                i += 1
                if len(outstanding) >= max_outstanding:
                    counts["shed"] += 1
                    continue
                task = loop.create_task(one(i, now))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
            await asyncio.sleep(tick)

    async def report() -> None:
        previous = {"ok": 0, "errors": 0, "shed": 0}
        for k in range(1, int(minutes * 60 / report_every) + 1):
            await asyncio.sleep(k * report_every - loop.time())
            gc.collect()
            delta = {name: counts[name] - previous[name] for name in counts}
            previous = dict(counts)
            done = delta["ok"] + delta["errors"]
            cache_size, keys, series = snapshot(parts)
            row = Row(
                minute=round(loop.time() / 60), completed=done, throughput=done / report_every,
                ok=delta["ok"], errors=delta["errors"], shed=delta["shed"],
                p50=parts["metrics"].statistics().latency_p50,
                heap_mb=tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing()
                else 0.0,
                rss_mb=rss_mb(), cache_size=cache_size, limiter_keys=keys, series=series,
                tasks=len(asyncio.all_tasks()) - 2,  # calls in flight: all but the producer and us
            )
            rows.append(row)
            if out is not None:
                out(row)

    producer = loop.create_task(produce())
    await report()
    await producer
    if outstanding:  # let the last arrivals finish (hung ones end at the Timeout)
        await asyncio.wait(outstanding)
    return rows


HEADER = (f"{'min':>4} {'calls':>7} {'calls/s':>8} {'ok':>7} {'errors':>6} {'shed':>5} "
          f"{'p50 s':>6} {'heap MB':>8} {'RSS MB':>7} {'cache':>6} {'rl keys':>7} "
          f"{'series':>6} {'tasks':>6}")


def format_row(r: Row) -> str:
    p50 = "-" if r.p50 is None else f"{r.p50:.2f}"
    return (f"{r.minute:4d} {r.completed:7d} {r.throughput:8.1f} {r.ok:7d} {r.errors:6d} "
            f"{r.shed:5d} {p50:>6} {r.heap_mb:8.2f} {r.rss_mb:7.1f} {r.cache_size:6d} "
            f"{r.limiter_keys:7d} {r.series:6d} {r.tasks:6d}")


def verdict(rows: list[Row]) -> str:
    """Heap growth from minute 10 (caches warm) to the end, and throughput's variation."""
    warm = next((r for r in rows if r.minute >= 10), rows[0])
    last = rows[-1]
    growth = (last.heap_mb - warm.heap_mb) / warm.heap_mb * 100 if warm.heap_mb else 0.0
    rates = [r.throughput for r in rows]
    cv = statistics.pstdev(rates) / statistics.mean(rates) * 100 if rates else 0.0
    return (f"heap {warm.heap_mb:.2f} MB at minute {warm.minute} -> {last.heap_mb:.2f} MB at "
            f"minute {last.minute}: {growth:+.1f}%; RSS {warm.rss_mb:.1f} -> {last.rss_mb:.1f} MB; "
            f"throughput CV across intervals {cv:.1f}%")


def run(*, minutes: int = 60, rate: float = 30.0, seed: int = 0,
        report_every: float = REPORT_EVERY, adaptive: bool = False,
        quiet: bool = False) -> list[Row]:
    """Run :func:`soak` on a fresh looptime loop with tracemalloc on; print the table."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    # One no-op cycle before each jump of the clock, not 1,000: the cycles exist for work done
    # in threads (executors), and there is none here, but this run has ~50,000 distinct timer
    # deadlines per virtual minute, so 1,000 cycles each would make the hour take hours.
    loop = looptime.new_event_loop(start=0, noop_cycles=1)
    show = None if quiet else (lambda row: print(format_row(row), flush=True))
    if not quiet:
        print(HEADER, flush=True)
    try:
        return loop.run_until_complete(
            soak(minutes=minutes, rate=rate, seed=seed, report_every=report_every,
                 adaptive=adaptive, out=show))
    finally:
        loop.close()
        if not tracing:
            tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=float, default=30.0, help="calls per virtual second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adaptive", action="store_true",
                        help="AdaptiveConcurrency (gradient) instead of ConcurrencyLimit(96)")
    args = parser.parse_args(argv)
    print(f"soak: {args.minutes} virtual minutes at {args.rate:g} calls/s "
          f"({args.minutes * 60 * args.rate:,.0f} calls)")
    started = time.perf_counter()
    rows = run(minutes=args.minutes, rate=args.rate, seed=args.seed, adaptive=args.adaptive)
    print(verdict(rows))
    print(f"real time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
