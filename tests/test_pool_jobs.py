"""AgentPool (borrow, fairness, cooldown, close) and JobManager (states, progress, expiry)."""

import asyncio

import pytest

import llmguard as lg
from llmguard import AgentPool, FailureKind, JobManager, JobStatus
from llmguard.testing import FakeLLM, make_error

# --- AgentPool ---------------------------------------------------------------------------------


async def test_pool_never_runs_more_than_per_member_on_one_agent() -> None:
    """20 concurrent calls over 3 agents with per_member=2: at most 2 on each, all answered."""
    agents = [FakeLLM(latency=1, reply_prefix=f"{i}: ") for i in range(3)]
    pool = AgentPool(agents, per_member=2)
    replies = await asyncio.gather(*(pool.send_message(str(i)) for i in range(20)))
    assert len(replies) == 20
    assert all(a.max_in_flight <= 2 for a in agents)
    assert sum(a.call_count for a in agents) == 20
    assert pool.statistics().in_flight == 0


async def test_pool_waiters_are_served_in_order() -> None:
    """With one agent, waiting calls are served first come, first served."""
    agent = FakeLLM(latency=1)
    pool = AgentPool([agent])
    await asyncio.gather(*(pool.send_message(str(i)) for i in range(5)))
    assert [args[0] for args, _ in agent.calls] == ["0", "1", "2", "3", "4"]


async def test_round_robin_and_weighted_strategies() -> None:
    """round_robin rotates; weighted sends more calls to heavier members."""
    agents = [FakeLLM() for _ in range(3)]
    pool = AgentPool(agents, strategy="round_robin")
    for i in range(6):
        await pool.send_message(str(i))
    assert [a.call_count for a in agents] == [2, 2, 2]
    agents = [FakeLLM(), FakeLLM()]
    pool = AgentPool(agents, strategy="weighted", weights=[9, 1], seed=1)
    for i in range(100):
        await pool.send_message(str(i))
    assert agents[0].call_count > 3 * agents[1].call_count


async def test_member_is_returned_on_error_and_cancellation() -> None:
    """Errors and cancellations give the member back; the next call proceeds."""
    agent = FakeLLM([ValueError("boom")], latency=5)
    pool = AgentPool([agent])
    with pytest.raises(ValueError):
        await pool.send_message("a")
    task = asyncio.create_task(pool.send_message("b"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.statistics().in_flight == 0 and pool.statistics().members[0].busy == 0
    assert await pool.send_message("c") == "echo: c"


async def test_failing_member_cools_down_then_probes() -> None:
    """A member failing with provider errors sits out its cooldown, then gets a probe call."""
    bad = FakeLLM([make_error(FailureKind.OVERLOADED)] * 3, reply_prefix="bad: ")
    good = FakeLLM(reply_prefix="good: ")
    pool = AgentPool([bad, good], strategy="round_robin", cooldown_after=1, cooldown=10)
    with pytest.raises(Exception):
        await pool.send_message("1")
    assert pool.statistics().members[0].cooling
    for i in range(4):
        assert (await pool.send_message(str(i))).startswith("good")
    await asyncio.sleep(10)
    bad.script.clear()
    replies = {await pool.send_message(str(i)) for i in range(2)}
    assert any(r.startswith("bad") for r in replies)


async def test_pool_is_guardable_and_closes_members() -> None:
    """pool.send_message can be wrapped by a pipeline; `async with` closes the members."""
    closed = []

    class Agent:
        async def send_message(self, m):
            return m

        async def aclose(self):
            closed.append(self)

    async with AgentPool([Agent(), Agent()]) as pool:
        guarded = lg.Pipeline(name="pool").retry(attempts=2).wrap(pool.send_message)
        assert await guarded("x") == "x"
    assert len(closed) == 2


def test_pool_bad_input() -> None:
    """Empty members, bad strategies, weights and members without the method are errors."""
    with pytest.raises(ValueError, match="empty"):
        AgentPool([])
    with pytest.raises(ValueError, match="strategy"):
        AgentPool([FakeLLM()], strategy="random")
    with pytest.raises(ValueError, match="weights"):
        AgentPool([FakeLLM()], weights=[1, 2])
    with pytest.raises(TypeError, match="no async method 'chat'"):
        AgentPool([object()], method="chat")


# --- JobManager ----------------------------------------------------------------------------------


async def test_job_lifecycle_and_result() -> None:
    """A job goes pending -> running -> completed and returns its result."""
    manager = JobManager()
    job = manager.submit(FakeLLM(latency=5).send_message, "hi")
    assert job.status is JobStatus.PENDING
    await asyncio.sleep(1)
    assert job.status is JobStatus.RUNNING
    assert await job.wait() == "echo: hi"
    assert job.status is JobStatus.COMPLETED and job.to_dict()["progress"] == {"done": 1, "total": 1}


async def test_failed_and_cancelled_jobs() -> None:
    """A failing call ends FAILED with its error; cancel() ends a running job CANCELLED."""
    manager = JobManager()
    failed = manager.submit(FakeLLM([ValueError("bad")]).send_message, "x")
    with pytest.raises(ValueError):
        await failed.wait()
    assert failed.status is JobStatus.FAILED and "bad" in failed.to_dict()["error"]
    slow = manager.submit(FakeLLM(latency=100).send_message, "x")
    await asyncio.sleep(1)
    assert slow.cancel()
    await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await slow.wait()
    assert slow.status is JobStatus.CANCELLED
    assert [j.id for j in manager.list("cancelled")] == [slow.id]


async def test_batch_job_reports_progress() -> None:
    """A batch job counts finished items; a failed item does not fail the job."""
    manager = JobManager()

    async def work(i):
        await asyncio.sleep(i)
        if i == 2:
            raise ValueError(i)
        return i

    job = manager.submit_batch(work, range(5), concurrency=1)
    await asyncio.sleep(3.5)
    assert 0 < job.done < 5 and job.total == 5
    outcomes = await job.wait()
    assert job.done == 5 and [o.ok for o in outcomes] == [True, True, False, True, True]


async def test_wait_timeout_and_unknown_ids_and_expiry() -> None:
    """wait(timeout=) raises TimeoutError; unknown ids and expired jobs raise JobNotFound."""
    async with JobManager(ttl=60) as manager:
        job = manager.submit(FakeLLM(latency=10).send_message, "x")
        with pytest.raises(TimeoutError):
            await job.wait(timeout=1)
        await job.wait()
        assert manager.get(job.id) is job
        await asyncio.sleep(61)
        with pytest.raises(lg.JobNotFound, match="no job"):
            manager.get(job.id)
        with pytest.raises(lg.JobNotFound):
            manager.get("job-999")


async def test_max_running_keeps_jobs_pending() -> None:
    """With max_running=1 the second job waits as pending until the first finishes."""
    manager = JobManager(max_running=1)
    first = manager.submit(FakeLLM(latency=5).send_message, "a")
    second = manager.submit(FakeLLM(latency=5).send_message, "b")
    await asyncio.sleep(1)
    assert (first.status, second.status) == (JobStatus.RUNNING, JobStatus.PENDING)
    await second.wait()
    assert first.status is JobStatus.COMPLETED
