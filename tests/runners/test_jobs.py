"""JobManager / Job: state transitions, progress, cancel, wait, listing, expiry, unknown ids."""

from __future__ import annotations

import asyncio
import json

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard import JobStatus


async def slow(x: int, delay: float = 5) -> int:
    await asyncio.sleep(delay)
    return x * 2


async def test_single_call_goes_pending_running_completed() -> None:
    """A submitted call is pending, then running, then completed with its result and timestamps."""
    manager = lg.JobManager()
    job = manager.submit(slow, 21)
    assert job.status is JobStatus.PENDING and job.started is None
    await asyncio.sleep(1)
    assert job.status is JobStatus.RUNNING and job.progress == (0, 1)
    await job.wait()
    assert job.status is JobStatus.COMPLETED and job.result == 42 and job.progress == (1, 1)
    assert job.created <= job.started <= job.finished
    assert manager.get(job.id) is job


async def test_failure_is_recorded() -> None:
    """An exception from the call makes the job failed with the error kept."""

    async def boom() -> None:
        raise ValueError("bad input")

    job = lg.JobManager().submit(boom)
    await job.wait()
    assert job.status is JobStatus.FAILED and isinstance(job.error, ValueError)
    assert job.to_dict()["error"] == "ValueError: bad input"


async def test_batch_job_progress_and_summary() -> None:
    """A batch job counts finished items; item failures do not fail the job; to_dict is JSON-safe."""

    async def fn(x: int) -> int:
        await asyncio.sleep(1)
        if x == 3:
            raise ValueError(x)
        return x

    job = lg.JobManager().submit_batch(fn, range(10), concurrency=2)
    await asyncio.sleep(2.5)
    assert job.progress == (4, 10)
    await job.wait()
    assert job.status is JobStatus.COMPLETED and len(job.result) == 10
    data = json.loads(json.dumps(job.to_dict()))
    assert data["result"] == {"ok": 9, "failed": 1} and data["done"] == 10


async def test_cancel_running_batch_and_pending_job() -> None:
    """cancel() stops a running batch (in-flight cancelled after grace) and a not-yet-started job."""
    calls: list[int] = []

    async def fn(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(10)
        return x

    manager = lg.JobManager()
    job = manager.submit_batch(fn, range(100), concurrency=2, grace=1)
    await asyncio.sleep(1)
    assert job.cancel()
    await job.wait()
    assert job.status is JobStatus.CANCELLED and calls == [0, 1]
    pending = manager.submit(slow, 1)
    assert pending.cancel() and pending.status is JobStatus.CANCELLED
    await pending.wait()
    assert not job.cancel()  # already finished


async def test_wait_timeout_leaves_job_running() -> None:
    """wait(timeout) raises TimeoutError but the job keeps running and completes."""
    job = lg.JobManager().submit(slow, 1, delay=10)
    with pytest.raises(TimeoutError, match="still running"):
        await job.wait(timeout=2)
    await job.wait()
    assert job.status is JobStatus.COMPLETED


async def test_list_expiry_and_unknown_ids() -> None:
    """list filters by status; finished jobs expire after ttl; unknown ids raise JobNotFound."""
    manager = lg.JobManager(ttl=60)
    quick, long = manager.submit(slow, 1, delay=1), manager.submit(slow, 2, delay=1000)
    await quick.wait()
    assert manager.list(status="completed") == [quick]
    assert manager.list(JobStatus.RUNNING) == [long]
    await asyncio.sleep(61)
    assert manager.list() == [long]
    with pytest.raises(lg.JobNotFound, match="expired"):
        manager.get(quick.id)
    long.cancel()


async def test_max_jobs_and_context_manager() -> None:
    """max_jobs refuses new jobs when all are running; async with cancels running jobs on exit."""
    async with lg.JobManager(max_jobs=1) as manager:
        job = manager.submit(slow, 1, delay=100)
        with pytest.raises(lg.QueueFull, match="max_jobs"):
            manager.submit(slow, 2)
    assert job.status is JobStatus.CANCELLED


@pytest.mark.parametrize(("kwargs", "match"), [({"ttl": 0}, "ttl"), ({"max_jobs": 0}, "max_jobs")])
def test_bad_arguments(kwargs, match) -> None:
    """Bad options raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        lg.JobManager(**kwargs)


@settings(max_examples=25, deadline=None)
@given(delays=st.lists(st.floats(0.1, 5), min_size=1, max_size=40),
       cancel_at=st.floats(0, 20), concurrency=st.integers(1, 4), grace=st.floats(0, 3))
def test_cancelled_batch_job_keeps_every_finished_outcome(delays, cancel_at, concurrency,
                                                          grace) -> None:
    """Property (issue 21 #11): a batch job cancelled at any instant keeps as its result one
    Outcome per admitted item (finished ones with their values, stragglers past ``grace`` as
    ``CancelledError``), ``done`` equals that count, and a user ``on_result`` still sees each."""
    async def scenario() -> None:
        async def fn(x: float) -> float:
            await asyncio.sleep(x)
            return x

        seen: list = []
        manager = lg.JobManager()
        job = manager.submit_batch(fn, delays, concurrency=concurrency, grace=grace,
                                   on_result=seen.append)
        await asyncio.sleep(cancel_at)
        job.cancel()
        await job.wait()
        outcomes = job.result
        assert isinstance(outcomes, list) and job.done == len(outcomes) == len(seen)
        assert sorted(o.index for o in outcomes) == sorted({o.index for o in outcomes})
        for o in outcomes:
            assert (o.ok and o.value == delays[o.index]) or isinstance(o.error, asyncio.CancelledError)
        if job.status is JobStatus.COMPLETED:
            assert len(outcomes) == len(delays)
        else:
            assert job.status is JobStatus.CANCELLED
        assert job.to_dict()["result"] is not None or not outcomes

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
