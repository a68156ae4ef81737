"""Retry(deadline=...) ends attempts still queued for admission, with or without a Timeout layer
(issue #35 item 13: without Timeout they ran up to 120 s past a 10 s deadline)."""

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard.testing import FixedWindowServer

RPM = 5
DEADLINE = 10.0
DEMAND = 20


def readme_stack(timeout: bool) -> lg.Pipeline:
    """The README's recommended stack with its default settings (and a deadline), with or without
    its Timeout layer."""
    pipeline = (lg.Pipeline(name="deadline").metrics().cache(ttl=300)
                .fallback({"model": "backup"}).retry(attempts=4, deadline=DEADLINE)
                .circuit_breaker())
    if timeout:
        pipeline = pipeline.timeout(30)
    return pipeline.rate_limit(rpm=RPM).concurrency_limit(32)


@pytest.mark.parametrize("timeout", [False, True], ids=["without-timeout", "with-timeout"])
async def test_attempts_queued_past_the_deadline_end_with_admission_timeout(timeout: bool) -> None:
    """20 calls against rpm=5: 5 are sent at once, the other 15 queue for quota that comes back
    only after 60 s. Each queued attempt ends with AdmissionTimeout when its deadline passes (10
    s for the primary; Fallback's alternate gets its own Retry and so its own 10 s), nothing is
    sent late, the provider never sees more than its quota, and the breaker stays closed."""
    server = FixedWindowServer(rpm=RPM, latency=1.0)
    guarded = readme_stack(timeout).wrap(server.acompletion)
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended: list[float] = []

    async def one(i: int) -> Any:
        try:
            return await guarded(model="primary",
                                 messages=[{"role": "user", "content": f"question {i}"}])
        finally:
            ended.append(loop.time() - start)

    results = await asyncio.gather(*(one(i) for i in range(DEMAND)), return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(answered) == RPM
    assert errors
    for error in errors:  # the primary's AdmissionTimeout, then the alternate's
        assert isinstance(error, lg.FallbackExhausted), error
        assert all(isinstance(e, lg.AdmissionTimeout) and "never reached the provider" in str(e)
                   for e in error.exceptions), error.exceptions
    # The primary's deadline, then the alternate's: never a minute-long wait for the window.
    assert max(ended) <= 2 * DEADLINE + 0.01, sorted(ended)
    stats = server.statistics()
    assert stats.rate_limited == 0 and stats.peak_window_requests <= RPM
    assert len(server.arrivals) == RPM


async def test_a_sent_attempt_is_not_cancelled_by_the_deadline() -> None:
    """Without a Timeout, an attempt that reached the provider before the deadline runs to its
    end: the provider charges it, so the deadline only ends attempts still queued."""
    server = FixedWindowServer(rpm=RPM, latency=15.0)
    guarded = lg.guard(lg.Retry(attempts=2, deadline=DEADLINE), lg.RateLimit(rpm=RPM))(
        server.acompletion)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await guarded(messages=[{"role": "user", "content": "slow"}])
    assert result["object"] == "chat.completion"
    assert loop.time() - start == pytest.approx(15.0)
    assert server.statistics().cancelled_after_arrival == 0


async def test_the_callers_cancellation_stays_a_cancellation() -> None:
    """A caller cancelling an attempt queued under a deadline gets CancelledError, not an
    AdmissionTimeout, and the rate limit is back at baseline."""
    limit = lg.RateLimit(rpm=1)
    server = FixedWindowServer(rpm=1, latency=0.1)
    guarded = lg.guard(lg.Retry(attempts=2, deadline=DEADLINE), limit)(server.acompletion)
    await guarded(messages=[{"role": "user", "content": "takes the quota"}])
    task = asyncio.ensure_future(guarded(messages=[{"role": "user", "content": "queued"}]))
    await asyncio.sleep(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = limit.statistics()
    assert stats.waiting == 0 and stats.in_flight == 0
