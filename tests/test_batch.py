"""The batch runner: one outcome per item, bounded memory, order, checkpoints and resume."""

import asyncio
import json
import random

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard import FailureKind, Retry, batch, batch_iter
from llmguard.testing import FakeLLM, make_error


async def double(x: int) -> int:
    await asyncio.sleep((x * 7) % 5)
    return 2 * x


async def test_every_item_ends_as_one_outcome_in_order() -> None:
    """Outcomes come back in input order, failures recorded, the batch never stopped by one."""

    async def fn(x: int) -> int:
        if x % 4 == 0:
            raise ValueError(f"bad {x}")
        return await double(x)

    outcomes = await batch(fn, range(50), concurrency=8)
    assert [o.index for o in outcomes] == list(range(50))
    assert all((o.error is not None) == (o.index % 4 == 0) for o in outcomes)
    assert all(o.value == 2 * o.index for o in outcomes if o.ok)


async def test_unordered_yields_as_completed() -> None:
    """ordered=False yields fast items before slow ones."""
    outcomes = [o async for o in batch_iter(double, [4, 0], concurrency=2, ordered=False)]
    assert [o.item for o in outcomes] == [0, 4]


async def test_concurrency_and_window_bound_the_work_in_flight() -> None:
    """At most `concurrency` calls run; the input is pulled lazily, never all at once."""
    llm = FakeLLM(latency=1)
    pulled = []

    def items():
        for i in range(1000):
            pulled.append(i)
            yield str(i)

    consumed = 0
    async for _ in batch_iter(llm.send_message, items(), concurrency=5, window=10):
        consumed += 1
        if consumed == 20:
            break
    assert llm.max_in_flight == 5
    assert len(pulled) <= 20 + 10 + 5  # consumed + window + one per worker


async def test_async_iterable_input() -> None:
    """An async generator is streamed as the input."""

    async def items():
        for i in range(10):
            yield i

    outcomes = await batch(double, items(), concurrency=3)
    assert [o.value for o in outcomes] == [2 * i for i in range(10)]


async def test_attempts_come_from_the_retry_layer() -> None:
    """A guarded function's retries show up as the outcome's attempts."""
    llm = FakeLLM([make_error(FailureKind.OVERLOADED), make_error(FailureKind.OVERLOADED)])
    guarded = lg.guard(Retry(attempts=3))(llm.send_message)
    (outcome,) = await batch(guarded, ["x"])
    assert outcome.ok and outcome.attempts == 3


async def test_checkpoint_resume_skips_done_items_and_retries_failed(tmp_path) -> None:
    """A rerun with the same checkpoint does not call the function again for finished items."""
    path = tmp_path / "run.jsonl"
    calls = []
    failed_once = set()

    async def flaky(x: int) -> int:
        calls.append(x)
        if x == 3 and x not in failed_once:
            failed_once.add(x)
            raise ValueError("first time")
        return x * 10

    first = await batch(flaky, range(6), checkpoint=str(path))
    assert [o.ok for o in first] == [True, True, True, False, True, True]
    calls.clear()
    second = await batch(flaky, range(6), checkpoint=str(path))
    assert calls == [3]  # only the failed item ran again
    assert [o.value for o in second] == [0, 10, 20, 30, 40, 50]
    assert [o.attempts for o in second] == [0, 0, 0, 1, 0, 0]


async def test_checkpoint_keeps_failures_when_asked_and_tolerates_a_torn_line(tmp_path) -> None:
    """retry_failed=False restores failures; a half-written last line is redone, not fatal."""
    path = tmp_path / "run.jsonl"

    async def fail(x):
        raise RuntimeError("nope")

    await batch(fail, range(2), checkpoint=str(path))
    with open(path, "a") as f:
        f.write('{"key": "2:')  # a crash mid-write
    again = await batch(double, range(3), checkpoint=str(path), retry_failed=False)
    assert [o.ok for o in again] == [False, False, True]
    assert "nope" in str(again[0].error)


async def test_damaged_checkpoint_line_is_a_clear_error(tmp_path) -> None:
    """A corrupt line in the middle of a checkpoint names the file and line."""
    path = tmp_path / "run.jsonl"
    path.write_text('not json\n{"key": "0:x", "ok": true}\n')
    with pytest.raises(ValueError, match="line 1"):
        await batch(double, range(2), checkpoint=str(path))


async def test_stopping_early_cancels_in_flight_items_and_records_them(tmp_path) -> None:
    """Leaving the loop cancels the workers; in-flight items are recorded as cancelled."""
    path = tmp_path / "run.jsonl"
    llm = FakeLLM(latency=10)
    agen = batch_iter(llm.send_message, [str(i) for i in range(10)], concurrency=3,
                      checkpoint=str(path))
    task = asyncio.create_task(agen.__anext__())
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await agen.aclose()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 3 and not any(r["ok"] for r in records)
    assert llm.in_flight == 0


def test_bad_arguments() -> None:
    """concurrency < 1, a window below it and a non-callable fn are clear errors."""

    async def consume(**kw):
        return await batch(kw.pop("fn", double), [1], **kw)

    for kw, error, match in ((dict(concurrency=0), ValueError, "concurrency"),
                             (dict(concurrency=4, window=2), ValueError, "window"),
                             (dict(fn=42), TypeError, "fn")):
        with pytest.raises(error, match=match):
            asyncio.run(consume(**kw))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "slow"]), max_size=40),
       st.integers(1, 8), st.booleans(), st.integers(0, 10_000))
def test_exactly_one_outcome_per_item(plan, concurrency, ordered, seed) -> None:
    """Whatever fails and however work interleaves, each item ends as exactly one outcome."""
    rng = random.Random(seed)

    async def fn(i: int):
        await asyncio.sleep(rng.random() * (5 if plan[i] == "slow" else 0.1))
        if plan[i] == "fail":
            raise ValueError(i)
        return i

    async def run():
        return await batch(fn, range(len(plan)), concurrency=concurrency, ordered=ordered)

    loop = looptime.new_event_loop(start=0, noop_cycles=1000)  # virtual time: no real sleeps
    try:
        outcomes = loop.run_until_complete(run())
    finally:
        loop.close()
    assert sorted(o.index for o in outcomes) == list(range(len(plan)))
    assert all(o.ok == (plan[o.index] != "fail") for o in outcomes)
