"""Fan-out: many callers queued on one limiter; what each costs and how they leave (issue #21, 7).

``--waiters`` callers (100k; ``--quick`` 10k) queue behind one holder on each of:
``lg.ConcurrencyLimiter(1)`` (``async with``), the ``ConcurrencyLimit(1)`` layer, the
``RateLimit`` layer (a token quota the holder has reserved in full), and ``asyncio.Semaphore(1)``
for reference. Measured, each on a fresh limiter:

- enqueue: microseconds per waiter from creating the tasks until every one waits;
- drain: microseconds per waiter from the holder's release until all have run (FIFO hand-off);
- memory: traced bytes per waiter (tracemalloc), and beyond a task awaiting its own future;
- cancellation in FIFO (oldest first), LIFO (newest first) and random order, one waiter at a
  time, each in its own event-loop step: total time, microseconds per waiter, and the longest
  step (the event loop is blocked that long; cancelling them all at once, as ``gather`` does,
  blocks it for the total). The queued waiters are frozen out of the garbage collector while
  they are cancelled, so a full collection over them does not land in some step. A scenario that runs past ``--budget`` seconds is stopped there
  (the rest are cancelled oldest first, untimed) and reported as such.

The aim of #21 is cancellation in O(1) (or amortised O(log n)): LIFO and random no dearer than
FIFO (printed as the median step within 3x of FIFO's) and the longest step independent of the
queue length.

    python benchmarks/bench_fanout.py [--quick] [--waiters N] [--budget S]
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, not an install

import llmguard as lg  # noqa: E402
from llmguard.backends import ConcurrencyLimiter  # noqa: E402

HOLDER = "holder"
PROMPT = "Question: what is the capital of France?"
USAGE = {"usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}}


@dataclass
class Queue:
    """One limiter with a caller factory: ``call(prompt)`` is a coroutine; the call with
    ``HOLDER`` takes the only room and keeps it until ``hold`` is set."""

    call: Callable[[str], Awaitable[Any]]
    hold: asyncio.Future[None]
    waiting: Callable[[], int | None]


def provider_for(hold: asyncio.Future[None]) -> Callable[[str], Awaitable[Any]]:
    async def send_message(prompt: str) -> Any:
        if prompt == HOLDER:
            await hold
        return USAGE

    return send_message


def concurrency_limiter(n: int) -> Queue:
    hold = asyncio.get_running_loop().create_future()
    limiter = ConcurrencyLimiter(1)
    send_message = provider_for(hold)

    async def call(prompt: str) -> Any:
        async with limiter:
            return await send_message(prompt)

    return Queue(call, hold, lambda: limiter.statistics().waiting)


def concurrency_layer(n: int) -> Queue:
    hold = asyncio.get_running_loop().create_future()
    layer = lg.ConcurrencyLimit(1)
    return Queue(lg.guard(layer)(provider_for(hold)), hold, lambda: layer.statistics().waiting)


def rate_layer(n: int) -> Queue:
    """The holder reserves the whole token quota; each waiter needs one token. When the holder
    ends, its reservation is reconciled to the one token it used: room for every waiter."""
    hold = asyncio.get_running_loop().create_future()
    quota = n + 1
    layer = lg.RateLimit(tpm=quota, tokens=lambda prompt: quota if prompt == HOLDER else 1)
    return Queue(lg.guard(layer)(provider_for(hold)), hold, lambda: layer.statistics().waiting)


def semaphore(n: int) -> Queue:
    hold = asyncio.get_running_loop().create_future()
    gate = asyncio.Semaphore(1)
    send_message = provider_for(hold)

    async def call(prompt: str) -> Any:
        async with gate:
            return await send_message(prompt)

    return Queue(call, hold, lambda: None)


def own_task(n: int) -> Queue:
    """Not a limiter: each caller awaits a future of its own (the floor for any waiter)."""
    loop = asyncio.get_running_loop()
    hold = loop.create_future()

    async def call(prompt: str) -> Any:
        if prompt == HOLDER:
            await hold
        else:
            await loop.create_future()

    return Queue(call, hold, lambda: None)


TARGETS: dict[str, Callable[[int], Queue]] = {
    "lg.ConcurrencyLimiter(1)": concurrency_limiter,
    "ConcurrencyLimit(1) layer": concurrency_layer,
    "RateLimit layer (tpm)": rate_layer,
    "asyncio.Semaphore(1) (reference)": semaphore,
}
OWN = "a task awaiting its own future"


async def enqueue(queue: Queue, n: int) -> tuple[list[asyncio.Task[Any]], float]:
    """Start the holder, then ``n`` waiters; returns them once all wait, and us per waiter."""
    loop = asyncio.get_running_loop()
    holder = loop.create_task(queue.call(HOLDER))
    await asyncio.sleep(0)
    assert not holder.done()
    start = time.perf_counter()
    tasks = [loop.create_task(queue.call(PROMPT)) for _ in range(n)]
    await asyncio.sleep(0)  # each task runs to where it waits
    elapsed = time.perf_counter() - start
    waiting = queue.waiting()
    assert waiting in (None, n), f"{waiting} of {n} waiting"
    return [holder, *tasks], elapsed / n * 1e6


async def finish(queue: Queue, tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks[1:]:  # oldest first: the cheap order everywhere
        task.cancel()
    await asyncio.sleep(0)
    if not queue.hold.done():
        queue.hold.set_result(None)
    await asyncio.gather(*tasks, return_exceptions=True)


async def time_enqueue_and_drain(build: Callable[[int], Queue], n: int) -> tuple[float, float]:
    queue = build(n)
    gc.collect()
    tasks, per_waiter = await enqueue(queue, n)
    start = time.perf_counter()
    queue.hold.set_result(None)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    drain = (time.perf_counter() - start) / n * 1e6
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    return per_waiter, drain


async def waiter_bytes(build: Callable[[int], Queue], n: int) -> float:
    queue = build(n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks, _ = await enqueue(queue, n)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    await finish(queue, tasks)
    return (after - before) / n


@dataclass
class Cancelled:
    cancelled: int
    total: float
    steps: list[float]
    stopped: bool


async def cancel_in_order(build: Callable[[int], Queue], n: int, order: str,
                          budget: float) -> Cancelled:
    queue = build(n)
    gc.collect()
    tasks, _ = await enqueue(queue, n)
    # The queued population is moved out of the collector's sight while cancelling: otherwise a
    # collection walking 100k live waiters (hundreds of ms) lands in some step and hides what the
    # limiter's own clean-up costs.
    gc.collect()
    gc.freeze()
    waiters = tasks[1:]
    if order == "LIFO":
        waiters.reverse()
    elif order == "random":
        random.Random(7).shuffle(waiters)
    steps = []
    clock = time.perf_counter
    started = clock()
    stopped = False
    for task in waiters:
        step = clock()
        task.cancel()
        await asyncio.sleep(0)  # the cancelled waiter's clean-up runs in this step
        now = clock()
        steps.append(now - step)
        if now - started > budget:
            stopped = True
            break
    total = clock() - started
    gc.unfreeze()
    left = queue.waiting()
    if not stopped:
        assert all(task.cancelled() for task in waiters), "a waiter outlived its cancellation"
        assert left in (None, 0), f"{left} still counted as waiting after all were cancelled"
    await finish(queue, tasks)
    after = queue.call(PROMPT)  # the limiter still works: a new call goes straight through
    await asyncio.wait_for(after, 5)
    return Cancelled(len(steps), total, steps, stopped)


async def main(args: argparse.Namespace) -> None:
    n, repeats = args.waiters, args.repeats
    started = time.perf_counter()
    print(f"{n} waiters behind one holder; enqueue and drain: median of {repeats}; "
          f"cancellation one waiter per event-loop step, budget {args.budget:g} s a scenario\n")

    timing: dict[str, tuple[float, float]] = {}
    memory: dict[str, float] = {}
    floor = await waiter_bytes(own_task, n)
    for name, build in TARGETS.items():
        samples = [await time_enqueue_and_drain(build, n) for _ in range(repeats)]
        timing[name] = (statistics.median(s[0] for s in samples),
                        statistics.median(s[1] for s in samples))
        memory[name] = await waiter_bytes(build, n)

    print(f"| {'limiter':34} | enqueue us/waiter | drain us/waiter | bytes/waiter | "
          f"beyond own task |")
    print(f"|{'-' * 36}|------------------:|----------------:|-------------:|"
          f"----------------:|")
    print(f"| {OWN:34} | {'':17} | {'':15} | {floor:12.0f} | {0:15.0f} |")
    for name in TARGETS:
        queue_us, drain_us = timing[name]
        print(f"| {name:34} | {queue_us:17.2f} | {drain_us:15.2f} | {memory[name]:12.0f} | "
              f"{memory[name] - floor:15.0f} |")

    print(f"\nCancelling all {n} waiters, one per event-loop step\n")
    print(f"| {'limiter':34} | order  | {'cancelled':>14} | total s | us/waiter | p50 us "
          f"| longest step ms |")
    print(f"|{'-' * 36}|:-------|---------------:|--------:|----------:|-------:|"
          f"----------------:|")
    verdicts = []
    for name, build in TARGETS.items():
        per_waiter, medians = {}, {}
        for order in ("FIFO", "LIFO", "random"):
            result = await cancel_in_order(build, n, order, args.budget)
            steps = result.steps
            per_waiter[order] = result.total / result.cancelled * 1e6
            done = f"{result.cancelled}" + (" (budget)" if result.stopped else "")
            print(f"| {name:34} | {order:6} | {done:>14} | {result.total:7.2f} | "
                  f"{per_waiter[order]:9.2f} | {statistics.median(steps) * 1e6:6.1f} | "
                  f"{max(steps) * 1e3:15.2f} |")
            medians[order] = statistics.median(steps)
        if "reference" not in name:
            worst = max(medians["LIFO"], medians["random"]) / medians["FIFO"]
            verdicts.append((name, worst))

    print("\nTarget of #21 item 7 (cancellation O(1) or amortised O(log n)): LIFO and random "
          "median step within 3x of FIFO's (the median: a busy machine adds\nmillisecond pauses "
          "to a few steps; the longest step above shows those and any O(n) compaction)")
    for name, worst in verdicts:
        print(f"- {name}: {worst:.1f}x FIFO {'pass' if worst <= 3 else 'MISS'}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k waiters, 1 repeat")
    parser.add_argument("--waiters", type=int, help="queued callers (default 100000)")
    parser.add_argument("--repeats", type=int, help="enqueue/drain samples (default 3)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds a cancellation scenario may take before it is stopped")
    args = parser.parse_args(argv)
    if args.waiters is None:
        args.waiters = 10_000 if args.quick else 100_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
