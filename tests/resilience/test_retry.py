"""Retry: backoff arithmetic, what is retried, Retry-After, deadlines, budgets, cancellation."""

import asyncio
import random

import pytest

import llmguard as lg
from llmguard import FailureKind, Retry, RetryBudget
from llmguard._core.clock import backoff
from llmguard.testing import FakeLLM, make_error


def test_backoff_delay_is_capped_exponential_with_full_jitter() -> None:
    """The ceiling doubles per attempt up to the cap; jitter stays within [0, ceiling)."""
    assert [backoff(n, 0.5, 4.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    rng = random.Random(1)
    assert all(0 <= backoff(3, 0.5, 4.0, rng.random()) < 2.0 for _ in range(100))


async def test_retries_transient_errors_until_success() -> None:
    """Two 503s then an answer: three attempts, the attempt number visible to inner layers."""
    seen = []

    async def spy(call, call_next):
        seen.append(call.attempt)
        return await call_next(call)

    llm = FakeLLM([make_error(FailureKind.OVERLOADED)] * 2)
    retry = Retry(attempts=3)
    guarded = lg.guard(retry, spy)(llm.send_message)
    assert await guarded("x") == "echo: x"
    assert seen == [1, 2, 3]
    stats = retry.statistics()
    assert (stats.calls, stats.retries, stats.retries_by_kind) == (1, 2, {"overloaded": 2})


@pytest.mark.parametrize("kind", [FailureKind.BAD_REQUEST, FailureKind.QUOTA_EXHAUSTED,
                                  FailureKind.CONTEXT_WINDOW, FailureKind.AUTH])
async def test_permanent_failures_are_not_retried(kind: FailureKind) -> None:
    """Errors a retry cannot fix raise at once."""
    llm = FakeLLM([make_error(kind), "never"])
    with pytest.raises(Exception):
        await lg.guard(Retry(attempts=5))(llm.send_message)("x")
    assert llm.call_count == 1


async def test_admission_refusals_are_not_retried() -> None:
    """llmguard's own QueueFull is a local refusal, not a provider failure."""
    llm = FakeLLM([lg.QueueFull("full")])
    with pytest.raises(lg.QueueFull):
        await lg.guard(Retry(attempts=5))(llm.send_message)("x")
    assert llm.call_count == 1


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After: 7 waits 7 s plus at most the jittered backoff (0.1 s)."""
    llm = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=7.0)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    await lg.guard(Retry(attempts=2, backoff=0.1))(llm.send_message)("x")
    assert 7.0 <= loop.time() - start <= 7.1


async def test_a_rate_limit_below_holding_the_retry_shortens_the_retry_after() -> None:
    """A learning RateLimit below that paused its key after a 429 holds the retry itself, so
    Retry waits only until ``Attempt.resume_at`` (never longer than the Retry-After): with
    ``Retry-After: 60`` and the rate limit resuming 5 s later, the retry goes at 5 s (plus the
    jitter); a layer saying nothing leaves the 60 s."""
    loop = asyncio.get_running_loop()

    async def resumes_in_five(call, call_next):
        try:
            return await call_next(call)
        except Exception:
            call.current.resume_at = loop.time() + 5.0
            raise

    for layers, waited in (([resumes_in_five], 5.0), ([], 60.0)):
        llm = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=60.0)])
        start = loop.time()
        await lg.guard(Retry(attempts=2, backoff=0.1), *layers)(llm.send_message)("x")
        assert loop.time() - start == pytest.approx(waited + 0.05, abs=0.051)  # + the jitter
        assert llm.call_count == 2


async def test_retry_after_beyond_max_delay_is_waited_never_cut_short() -> None:
    """Regression (issue 21 #13): Retry-After: 120 with max_delay=30 waits the 120 s (a retry
    at 30 s is a certain 429); with a deadline shorter than that it gives up at once instead."""
    llm = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=120.0)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    await lg.guard(Retry(attempts=2, backoff=0.1, max_delay=30))(llm.send_message)("x")
    assert 120.0 <= loop.time() - start <= 120.2
    error = make_error(FailureKind.RATE_LIMITED, retry_after=120.0)
    llm = FakeLLM([error])
    start = loop.time()
    with pytest.raises(Exception) as info:
        await lg.guard(Retry(attempts=2, max_delay=30, deadline=60))(llm.send_message)("x")
    assert info.value is error and loop.time() - start < 1 and llm.call_count == 1


async def test_exhausted_attempts_raise_the_last_error_with_history() -> None:
    """After the last attempt the final error is raised with a note listing every attempt."""
    errors = [make_error(FailureKind.SERVER_ERROR) for _ in range(3)]
    llm = FakeLLM(errors)
    retry = Retry(attempts=3)
    with pytest.raises(Exception) as info:
        await lg.guard(retry)(llm.send_message)("x")
    assert info.value is errors[-1]
    note = "\n".join(info.value.__notes__)
    assert "gave up after 3 attempts" in note and "attempt 1" in note and "waited" in note
    assert retry.statistics().gave_up == 1


async def test_on_accepts_types_kinds_and_predicates() -> None:
    """on= narrows or widens what is retried."""
    llm = FakeLLM([KeyError("k"), "ok"])
    assert await lg.guard(Retry(on=KeyError))(llm.send_message)("x") == "ok"
    llm = FakeLLM([make_error(FailureKind.BAD_REQUEST), "ok"])
    assert await lg.guard(Retry(on=[FailureKind.BAD_REQUEST]))(llm.send_message)("x") == "ok"
    llm = FakeLLM([ValueError("v"), "ok"])
    assert await lg.guard(Retry(on=lambda e: isinstance(e, ValueError)))(llm.send_message)("x") == "ok"
    with pytest.raises(TypeError, match="on="):
        Retry(on=["not an exception"])


async def test_results_can_be_retried() -> None:
    """retry_if_result retries an unwanted answer; the last one is returned if all are bad."""
    llm = FakeLLM(["", "", "good"])
    guarded = lg.guard(Retry(attempts=3, retry_if_result=lambda r: not r))(llm.send_message)
    assert await guarded("x") == "good"
    llm = FakeLLM(["", ""])
    guarded = lg.guard(Retry(attempts=2, retry_if_result=lambda r: not r))(llm.send_message)
    assert await guarded("x") == ""


async def test_deadline_bounds_all_attempts_and_is_set_on_the_call() -> None:
    """No attempt starts after the deadline; inner layers see call.deadline."""
    deadlines = []

    async def spy(call, call_next):
        deadlines.append(call.deadline)
        return await call_next(call)

    llm = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=20.0)] * 5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(Exception):
        await lg.guard(Retry(attempts=5, deadline=30, max_delay=60), spy)(llm.send_message)("x")
    assert llm.call_count == 2  # the third would start after 40 s > 30 s
    assert deadlines[0] == pytest.approx(start + 30)


async def test_budget_stops_retry_storms() -> None:
    """With a provider down, a shared budget caps retries at a fraction of calls."""
    llm = FakeLLM([make_error(FailureKind.OVERLOADED)] * 1000)
    retry = Retry(attempts=5, budget=RetryBudget(0.1, window=600, min_retries=0))
    guarded = lg.guard(retry)(llm.send_message)
    for _ in range(100):
        with pytest.raises(Exception):
            await guarded("x")
    stats = retry.statistics()
    assert stats.retries <= 10 and stats.budget_exhausted > 0
    assert llm.call_count == 100 + stats.retries


async def test_cancellation_during_backoff_is_not_retried() -> None:
    """Cancelling during a backoff sleep cancels the call; the next call works."""
    llm = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=10.0)])
    guarded = lg.guard(Retry(attempts=3))(llm.send_message)
    task = asyncio.create_task(guarded("x"))
    await asyncio.sleep(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert llm.call_count == 1
    assert await guarded("y") == "echo: y"


async def test_cancellation_inside_an_attempt_propagates() -> None:
    """A CancelledError raised by the provider is never retried."""
    llm = FakeLLM([asyncio.CancelledError()])
    with pytest.raises(asyncio.CancelledError):
        await lg.guard(Retry(attempts=3))(llm.send_message)("x")
    assert llm.call_count == 1


async def test_stream_retried_only_before_first_chunk() -> None:
    """A stream failing before its first chunk is retried; the retried stream is delivered."""
    attempts = []

    async def stream(prompt):
        attempts.append(1)
        if len(attempts) == 1:
            raise make_error(FailureKind.CONNECTION)
        yield "a"
        yield "b"

    guarded = lg.guard(Retry(attempts=2))(stream)
    assert [c async for c in guarded("x")] == ["a", "b"]
    assert len(attempts) == 2


def test_bad_configuration() -> None:
    """attempts < 1, negative or NaN delays, a zero deadline and bad budgets are rejected."""
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        Retry(backoff=-1)
    with pytest.raises(ValueError, match="max_delay"):
        Retry(max_delay=float("nan"))
    with pytest.raises(ValueError, match="deadline"):
        Retry(deadline=0)
    with pytest.raises(TypeError, match="budget"):
        Retry(budget="lots")
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(-1)


async def test_a_retry_after_of_infinity_is_retried_after_the_backoff() -> None:
    """A 429 whose Retry-After reads "inf" is retried after the backoff, as one without it: it
    was slept forever (the call hung, whatever ``attempts`` said)."""
    refused = lg.testing.RateLimited("slow down", status_code=429, headers={"retry-after": "inf"})
    llm = FakeLLM([refused])
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(3600):  # (virtual time: it failed here, not hung)
        await lg.guard(Retry(attempts=2, backoff=0.1))(llm.send_message)("x")
    assert loop.time() - start <= 0.1
