"""batch / batch_iter: exactly one Outcome per item, bounded memory, order, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg


async def double(x: int) -> int:
    await asyncio.sleep(0.01 * (x % 5))
    if x % 7 == 3:
        raise ValueError(f"bad {x}")
    return 2 * x


async def test_one_outcome_per_item_in_order() -> None:
    """Every item ends as exactly one Outcome, in input order; failures do not stop the batch."""
    outcomes = await lg.batch(double, range(50), concurrency=4)
    assert [o.index for o in outcomes] == list(range(50))
    for o in outcomes:
        assert o.ok == (o.index % 7 != 3)
        assert (o.value == 2 * o.index) if o.ok else isinstance(o.error, ValueError)
        assert o.attempts == 1 and o.key == str(o.index)


async def test_unordered_yields_as_completed() -> None:
    """ordered=False yields fast items before a slow one that started earlier."""

    async def fn(x: int) -> int:
        await asyncio.sleep(10 if x == 0 else 1)
        return x

    seen = [o.index async for o in lg.batch_iter(fn, range(4), concurrency=4, ordered=False)]
    assert seen[-1] == 0 and sorted(seen) == [0, 1, 2, 3]


@pytest.mark.parametrize("options", [
    {},                                           # every column derivable but items and values
    {"ordered": False},                           # indexes out of position: kept
    {"key": lambda x: f"k{x}"},                   # keys that are not str(index): kept
    {"keep_records": True},                       # call records: kept where an item has any
])
async def test_batch_returns_what_batch_iter_yields(options, tmp_path) -> None:
    """lg.batch keeps its outcomes as columns: reading them back gives Outcomes equal to the
    ones batch_iter handed out (index, key, item, value, error, attempts, latency, calls), as a
    sequence that indexes, slices, iterates and compares with a list."""

    @lg.guard(lg.Retry(attempts=2, backoff=0.01))
    async def fn(x: int) -> int:
        await asyncio.sleep(0.01 * (x % 5))
        if x % 7 == 3:
            raise ConnectionError(f"reset {x}")  # retried once, then the item's failure
        return 2 * x

    if "key" in options:
        options = {**options, "checkpoint": str(tmp_path / "run.jsonl")}
    handed: list[lg.Outcome] = []
    kept = await lg.batch(fn, range(30), concurrency=4, on_result=handed.append, **options)
    assert kept == handed and list(kept) == handed and kept != handed[:-1]
    assert sorted(o.index for o in kept) == list(range(30))
    assert len(kept) == 30 and kept[-1] == kept[29] and kept[2:5] == list(kept)[2:5]
    assert {o.key for o in kept} == ({f"k{i}" for i in range(30)} if "key" in options
                                     else {str(i) for i in range(30)})
    failed = [o for o in kept if not o.ok]
    assert failed and all(isinstance(o.error, ConnectionError) and o.attempts == 2 for o in failed)
    assert all(len(o.calls) == 1 for o in kept) if options.get("keep_records") else \
        all(o.calls == () for o in kept)
    with pytest.raises(IndexError):
        kept[30]


async def test_at_most_concurrency_in_flight_and_streamed_input() -> None:
    """No more than `concurrency` calls run at once, and the input is pulled lazily."""
    inflight = peak = pulled = 0

    def source():
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield i

    async def fn(x: int) -> int:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(1)
        inflight -= 1
        return x

    it = lg.batch_iter(fn, source(), concurrency=8)
    first = await anext(it)
    assert first.index == 0 and pulled <= 4 * 8 + 1
    await it.aclose()
    assert peak <= 8


async def test_huge_concurrency_starts_no_more_workers_than_items() -> None:
    """Workers start as items arrive: concurrency=10**10 over 10 items runs them all at once
    with at most 11 tasks, instead of creating 10**10 tasks up front."""
    started = len(asyncio.all_tasks())
    peak = 0

    async def fn(x: int) -> int:
        nonlocal peak
        peak = max(peak, len(asyncio.all_tasks()) - started)
        await asyncio.sleep(1)
        return x

    outcomes = await lg.batch(fn, range(10), concurrency=10**10)
    assert [o.value for o in outcomes] == list(range(10))
    assert peak <= 11 and asyncio.get_running_loop().time() == pytest.approx(1, abs=0.01)


async def test_reorder_buffer_is_bounded_by_a_slow_head() -> None:
    """A slow first item pauses admission after 4*concurrency items instead of buffering all."""
    started = 0

    async def fn(x: int) -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(100 if x == 0 else 0.1)
        return x

    it = lg.batch_iter(fn, range(10_000), concurrency=2)
    task = asyncio.ensure_future(anext(it))
    await asyncio.sleep(50)
    assert started <= 4 * 2
    assert (await task).index == 0
    await it.aclose()


async def test_async_iterable_input_and_async_on_result() -> None:
    """Async iterables are accepted; an async on_result is awaited once per outcome."""

    async def source():
        for i in range(10):
            yield i

    seen: list[int] = []

    async def on_result(o: lg.Outcome) -> None:
        seen.append(o.index)

    outcomes = await lg.batch(double, source(), concurrency=3, on_result=on_result)
    assert len(outcomes) == 10 and seen == list(range(10))


async def test_attempts_read_from_guarded_retry() -> None:
    """Outcome.attempts is the number of attempts the guarded function's Retry layer made."""
    failures = {1: 2, 2: 0}

    @lg.guard(lg.Retry(attempts=4, backoff=0.01))
    async def flaky(x: int) -> int:
        if failures[x] > 0:
            failures[x] -= 1
            raise ConnectionError("reset")
        return x

    outcomes = await lg.batch(flaky, [1, 2], concurrency=2)
    assert [o.attempts for o in outcomes] == [3, 1] and all(o.ok for o in outcomes)


async def test_cancellation_drains_in_flight_within_grace() -> None:
    """Cancelling a batch stops admission, lets in-flight items finish within grace, re-raises."""
    finished: list[int] = []

    async def fn(x: int) -> int:
        await asyncio.sleep(5)
        finished.append(x)
        return x

    task = asyncio.ensure_future(lg.batch(fn, range(100), concurrency=4, grace=10))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(finished) == [0, 1, 2, 3]


async def test_signal_stops_admission_and_raises_summary(tmp_path) -> None:
    """With handle_signals, SIGINT drains in-flight items, cancels stragglers after grace and raises
    BatchInterrupted carrying every finished outcome (stragglers as CancelledError outcomes)."""

    async def fn(x: int) -> int:
        await asyncio.sleep(100 if x == 1 else 2)
        return x

    async def interrupt() -> None:
        await asyncio.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)

    asyncio.ensure_future(interrupt())
    with pytest.raises(lg.BatchInterrupted, match="SIGINT") as info:
        await lg.batch(fn, range(100), concurrency=2, grace=10, handle_signals=True,
                       checkpoint=tmp_path / "c.jsonl")
    outcomes = info.value.outcomes
    assert [o.index for o in outcomes] == [0, 1]
    assert outcomes[0].ok and isinstance(outcomes[1].error, asyncio.CancelledError)
    assert (tmp_path / "c.jsonl").read_text().count("\n") == 1  # the cancelled item is not "done"


async def test_input_error_propagates_after_draining() -> None:
    """An exception from the input iterator stops the batch and is raised to the caller."""

    def source():
        yield 1
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        await lg.batch(double, source())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency must be"),
        ({"concurrency": -1}, "concurrency must be"),
        ({"concurrency": 2.5}, "concurrency must be"),
        ({"grace": -1}, "grace must be"),
        ({"dead_letter": "x.jsonl"}, "dead_letter needs a checkpoint"),
    ],
)
async def test_bad_arguments_are_named(kwargs, match) -> None:
    """Bad options raise a ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        await lg.batch(double, [1], **kwargs)


async def test_non_callable_fn() -> None:
    """A non-callable fn raises TypeError naming fn."""
    with pytest.raises(TypeError, match="fn must be"):
        await lg.batch(42, [1])  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    concurrency=st.integers(1, 8),
    ordered=st.booleans(),
    plan=st.lists(st.sampled_from(["ok", "fail", "slow", "selfcancel"]), min_size=1, max_size=60),
    cancel_at=st.one_of(st.none(), st.floats(0.0, 5.0)),
)
def test_exactly_one_outcome_per_admitted_item(n, concurrency, ordered, plan, cancel_at) -> None:
    """Under random failures, an item's own CancelledError and a cancellation of the whole batch,
    each item that fn was called for ends as exactly one Outcome (seen by on_result, also while
    shutting down); nothing is duplicated, and without cancellation every input item is there."""
    called: list[int] = []
    seen: list[lg.Outcome] = []

    async def fn(x: int) -> int:
        called.append(x)
        action = plan[x % len(plan)]
        await asyncio.sleep(3 if action == "slow" else 0.5)
        if action == "fail":
            raise ValueError(x)
        if action == "selfcancel":
            raise asyncio.CancelledError()
        return x

    async def main() -> None:
        async def run() -> None:
            async for o in lg.batch_iter(fn, range(n), concurrency=concurrency, ordered=ordered,
                                         on_result=seen.append, grace=1):
                pass

        task = asyncio.ensure_future(run())
        if cancel_at is not None:
            await asyncio.sleep(cancel_at)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    indices = [o.index for o in seen]
    assert len(indices) == len(set(indices))
    assert set(indices) == set(called)  # drained and cancelled items reach on_result too
    if cancel_at is None:
        assert sorted(indices) == list(range(n)) and sorted(called) == list(range(n))
        if ordered:
            assert indices == list(range(n))
