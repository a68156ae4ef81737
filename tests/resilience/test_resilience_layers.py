"""Timeout, Fallback and CircuitBreaker: what each promises under failures and cancellation."""

import asyncio

import looptime
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard import CircuitBreaker, FailureKind, Fallback, Retry, Timeout
from llmguard._resilience.circuit import CircuitState, State
from llmguard.backends import CircuitStore
from llmguard.testing import FakeLLM, Faults, make_error

# --- Timeout -----------------------------------------------------------------------------------


async def test_timeout_raises_timeout_exceeded_naming_the_limit() -> None:
    """An attempt slower than the limit raises TimeoutExceeded, classified as TIMEOUT."""
    llm = FakeLLM(latency=10)
    timeout = Timeout(3)
    with pytest.raises(lg.TimeoutExceeded, match="longer than 3 s") as info:
        await lg.guard(timeout)(llm.send_message)("x")
    assert lg.classify(info.value).kind is FailureKind.TIMEOUT
    assert timeout.statistics().timed_out == 1 and llm.in_flight == 0


async def test_callers_cancellation_stays_a_cancellation() -> None:
    """Cancelling the caller inside a Timeout raises CancelledError, not a timeout."""
    llm = FakeLLM(latency=10)
    task = asyncio.create_task(lg.guard(Timeout(30))(llm.send_message)("x"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_clients_own_timeout_error_passes_through() -> None:
    """A TimeoutError raised by the client (not our timer) is not renamed."""
    error = TimeoutError("socket")
    with pytest.raises(TimeoutError) as info:
        await lg.guard(Timeout(30))(FakeLLM([error]).send_message)("x")
    assert info.value is error


async def test_timeout_is_per_attempt_and_honours_the_retry_deadline() -> None:
    """Retry + Timeout: each attempt gets the limit from when it is sent; no attempt starts
    after the deadline, and an attempt already sent is not cut short by it (it is paid for)."""
    llm = FakeLLM(latency=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(lg.TimeoutExceeded):
        await lg.guard(Retry(attempts=10, deadline=12, backoff=0.01), Timeout(5))(
            llm.send_message)("x")
    assert llm.call_count == 3  # sent at 0, ~5 and ~10 s; the deadline stops a fourth
    assert 15 <= loop.time() - start <= 15.1


async def test_time_spent_queued_locally_is_an_admission_timeout_the_breaker_ignores() -> None:
    """Time queued for a concurrency slot does not count against Timeout: the queued call is
    sent when the slot frees and gets its full limit at the provider. Only the overall
    deadline ends a queued call, as an AdmissionTimeout (local congestion, which CircuitBreaker
    does not count and Retry does not retry); a timeout at the provider is a TimeoutExceeded,
    which opens the circuit."""
    breaker = lg.CircuitBreaker(min_calls=1, failure_ratio=0.5)
    limit = lg.ConcurrencyLimit(1)
    llm = FakeLLM(latency=10)
    hog = asyncio.create_task(lg.guard(limit)(llm.send_message)("holds the slot for 10 s"))
    await asyncio.sleep(0.5)
    patient = lg.guard(Timeout(12), limit)(llm.send_message)
    assert await patient("queued 9.5 s, then 10 s at the provider") == "echo: queued 9.5 s, then 10 s at the provider"
    hog = asyncio.create_task(lg.guard(limit)(llm.send_message)("holds the slot again"))
    await asyncio.sleep(0.5)
    guarded = lg.guard(breaker, Retry(attempts=1, deadline=5), Timeout(5), limit)(llm.send_message)
    with pytest.raises(lg.AdmissionTimeout, match="never reached the provider"):
        await guarded("queued past the deadline")
    assert llm.call_count == 3 and breaker.statistics().state == "closed"
    await hog
    with pytest.raises(lg.TimeoutExceeded):
        await guarded("slow at the provider")
    assert breaker.statistics().state == "open"


# --- Fallback ----------------------------------------------------------------------------------


async def test_fallback_to_a_secondary_agent() -> None:
    """The seed's FallbackAgent in one line: primary fails, secondary answers."""
    primary = FakeLLM([make_error(FailureKind.SERVER_ERROR)])
    secondary = FakeLLM(reply_prefix="secondary: ")
    fallback = Fallback(secondary.send_message)
    guarded = lg.guard(fallback)(primary.send_message)
    assert await guarded("hi") == "secondary: hi"
    assert fallback.statistics().fallbacks == {"FakeLLM.send_message": 1}


async def test_keyword_override_alternates_rerun_the_inner_pipeline() -> None:
    """{"model": ...} re-runs the inner layers with the model replaced, then restores it."""
    models = []
    llm = FakeLLM([make_error(FailureKind.OVERLOADED)])

    async def spy(call, call_next):
        models.append(call.kwargs["model"])
        return await call_next(call)

    guarded = lg.guard(Fallback({"model": "small"}), spy)(llm.acompletion)
    result = await guarded(model="big", messages=[{"role": "user", "content": "x"}])
    assert models == ["big", "small"] and result["model"] == "small"


async def test_routes_send_a_kind_to_its_alternate() -> None:
    """A context-window error goes straight to the long-context model."""
    llm = FakeLLM([make_error(FailureKind.CONTEXT_WINDOW)])
    fallback = Fallback({"model": "other"},
                        routes={FailureKind.CONTEXT_WINDOW: {"model": "long"}})
    result = await lg.guard(fallback)(llm.acompletion)(model="short", messages=[])
    assert result["model"] == "long"


async def test_default_degrades_gracefully() -> None:
    """When everything fails, the default (a value or a callable) answers."""
    failing = FakeLLM([make_error(FailureKind.SERVER_ERROR)] * 3)
    guarded = lg.guard(Fallback(default="Sorry, try later."))(failing.send_message)
    assert await guarded("x") == "Sorry, try later."
    guarded = lg.guard(Fallback(default=lambda m: f"offline: {m}"))(failing.send_message)
    assert await guarded("x") == "offline: x"


async def test_everything_failing_raises_every_error_in_order() -> None:
    """FallbackExhausted is an ExceptionGroup with the primary's and each alternate's error."""
    errors = [make_error(FailureKind.SERVER_ERROR), make_error(FailureKind.OVERLOADED)]
    primary, secondary = FakeLLM([errors[0]]), FakeLLM([errors[1]])
    with pytest.raises(lg.FallbackExhausted) as info:
        await lg.guard(Fallback(secondary.send_message))(primary.send_message)("x")
    assert list(info.value.exceptions) == errors
    assert "primary" in str(info.value)


async def test_cancellation_is_never_a_fallback_trigger() -> None:
    """A cancelled primary does not start the alternate."""
    primary, secondary = FakeLLM(latency=10), FakeLLM()
    task = asyncio.create_task(lg.guard(Fallback(secondary.send_message))(primary.send_message)("x"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert secondary.call_count == 0


async def test_circuit_open_moves_to_the_alternate_at_once() -> None:
    """With the primary's circuit open, Fallback answers from the alternate without waiting."""
    breaker = CircuitBreaker()
    breaker.force_open()
    primary, secondary = FakeLLM(), FakeLLM(reply_prefix="2: ")
    guarded = lg.guard(Fallback(secondary.send_message), breaker)(primary.send_message)
    assert await guarded("x") == "2: x" and primary.call_count == 0


def test_fallback_rejects_bad_alternates() -> None:
    """Sync callables, empty dicts and a Fallback with nothing to fall back to are errors."""
    with pytest.raises(TypeError, match="async callable"):
        Fallback(lambda: 1)
    with pytest.raises(ValueError, match="non-empty dict"):
        Fallback({})
    with pytest.raises(ValueError, match="at least one"):
        Fallback()


# --- CircuitBreaker ----------------------------------------------------------------------------


def test_circuit_state_machine() -> None:
    """Closed -> open at the failure ratio -> half-open after open_for -> closed after probes."""
    state = CircuitState(failure_ratio=0.5, min_calls=4, window=10, open_for=5, half_open_calls=2)
    for ok in (True, False, True, False):
        assert state.allow(0)
        state.record(0, failed=not ok)
    assert state.state is State.OPEN and not state.allow(1)
    assert state.allow(6) and state.state is State.HALF_OPEN
    assert state.allow(6) and not state.allow(6)  # two probes at most
    state.record(6, failed=False)
    state.record(6, failed=False)
    assert state.state is State.CLOSED


def test_half_open_failure_reopens() -> None:
    """A failed probe opens the circuit again for another open_for."""
    state = CircuitState(failure_ratio=0.5, min_calls=1, window=10, open_for=5, half_open_calls=1)
    state.record(0, failed=True)
    assert state.allow(5)
    state.record(5, failed=True)
    assert state.state is State.OPEN and not state.allow(9) and state.allow(10)


async def test_breaker_opens_on_unhealthy_failures_and_fails_fast() -> None:
    """Enough 503s open the circuit; then calls fail fast with CircuitOpenError."""
    llm = FakeLLM([make_error(FailureKind.OVERLOADED)] * 20)
    breaker = CircuitBreaker(min_calls=5, failure_ratio=0.5)
    guarded = lg.guard(breaker)(llm.send_message)
    for _ in range(5):
        with pytest.raises(Exception):
            await guarded("x")
    with pytest.raises(lg.CircuitOpenError) as info:
        await guarded("x")
    assert info.value.retry_after == pytest.approx(15)
    assert llm.call_count == 5 and breaker.statistics().state == "open"
    await asyncio.sleep(15)
    llm.script.clear()
    for _ in range(3):
        assert await guarded("x") == "echo: x"
    assert breaker.statistics().state == "closed"


async def test_injected_429s_never_open_the_readme_stacks_breaker() -> None:
    """A provider refusing 30 % of calls at random with ``Retry-After: 2``, 1,000 callers
    through the README stack with a CircuitBreaker in its place: a 429 says the provider is up
    and pacing us, so no 429 counts and Retry finishes every call. (Counted, such 429s among
    3,000 callers with ``Retry(attempts=4)`` opened it for 15 s again and again: 877 calls
    failed with CircuitOpenError, the provider idle far longer than the 2 s asked.)"""
    llm = FakeLLM(latency=1.0)
    faults = Faults(error_rate=0.3, kinds={FailureKind.RATE_LIMITED: 1}, retry_after=2, seed=3)
    breaker = CircuitBreaker()
    guarded = lg.guard(Retry(attempts=8), breaker, Timeout(30), lg.RateLimit(rpm=600),
                       lg.ConcurrencyLimit(32), faults)(llm.send_message)
    answers = await asyncio.gather(*(guarded(f"q{i}") for i in range(1000)))
    assert answers == [f"echo: q{i}" for i in range(1000)]
    stats = breaker.statistics()
    assert stats.opened == 0 and stats.rejected == 0 and stats.failures == 0
    assert faults.statistics().injected["rate_limited"] > 300  # the 429s did come


async def test_bad_requests_and_cancellations_do_not_count() -> None:
    """Request errors and cancelled calls never open the circuit."""
    llm = FakeLLM([make_error(FailureKind.BAD_REQUEST)] * 10)
    breaker = CircuitBreaker(min_calls=2)
    guarded = lg.guard(breaker)(llm.send_message)
    for _ in range(10):
        with pytest.raises(Exception):
            await guarded("x")
    slow = lg.guard(breaker)(FakeLLM(latency=10).send_message)
    task = asyncio.create_task(slow("x"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.statistics().state == "closed" and breaker.statistics().failures == 0


def test_breaker_rejects_bad_values() -> None:
    """Ratios outside (0, 1], non-positive counts and durations are ValueErrors."""
    with pytest.raises(ValueError, match="failure_ratio"):
        CircuitBreaker(failure_ratio=0)
    with pytest.raises(ValueError, match="min_calls"):
        CircuitBreaker(min_calls=0)
    with pytest.raises(ValueError, match="open_for"):
        CircuitBreaker(open_for=-1)


async def test_stragglers_ending_while_half_open_are_not_probes() -> None:
    """Issue 21 #9: calls admitted while closed that end after the circuit opened (stragglers)
    are not probe results: their successes do not close the circuit while the one real probe
    still runs, and no more than ``half_open_calls`` probes are ever in flight."""
    breaker = CircuitBreaker(failure_ratio=0.5, min_calls=2, window=30, open_for=5,
                             half_open_calls=1)
    probes_in_flight = peak = 0

    async def provider(kind: str, seconds: float) -> str:
        nonlocal probes_in_flight, peak
        probe = breaker.state is State.HALF_OPEN
        probes_in_flight += probe
        peak = max(peak, probes_in_flight)
        try:
            await asyncio.sleep(seconds)
            if kind == "fail":
                raise make_error(FailureKind.OVERLOADED)
            return kind
        finally:
            probes_in_flight -= probe

    guarded = lg.guard(breaker)(provider)
    stragglers = [asyncio.create_task(guarded("ok", 7)) for _ in range(4)]  # end half-open
    for _ in range(2):
        with pytest.raises(Exception):
            await guarded("fail", 0)
    assert breaker.state is State.OPEN
    await asyncio.sleep(5)
    probe = asyncio.create_task(guarded("fail", 3))  # the one real probe, failing at t=8
    await asyncio.sleep(0)
    assert breaker.state is State.HALF_OPEN
    assert await asyncio.gather(*stragglers) == ["ok"] * 4  # end at t=7, mid-probe
    assert breaker.state is State.HALF_OPEN  # not closed by them
    with pytest.raises(lg.CircuitOpenError):
        await guarded("ok", 0)  # the probe slot is still taken
    with pytest.raises(Exception):
        await probe
    assert breaker.state is State.OPEN and peak <= 1


@settings(max_examples=50, deadline=None)
@given(calls=st.lists(st.tuples(st.floats(0, 30), st.floats(0, 8), st.booleans()),
                      min_size=1, max_size=30),
       half_open_calls=st.integers(1, 3))
@example(calls=[(0.0, 0.0, False), (0.0, 0.0, True), (3.0, 0.0, True), (3.0, 3.0, False),
                (6.0, 0.0, False), (6.0, 0.0, False)], half_open_calls=2)
@example(calls=[(0.0, 0.0, True), (0.0, 0.0, True), (3.0, 0.0, True), (3.0, 5.0, False),
                (6.0, 0.0, False), (6.0, 0.0, False)], half_open_calls=2)
def test_probes_in_flight_never_exceed_half_open_calls(calls, half_open_calls) -> None:
    """Property: whatever calls arrive, last and fail, the calls let through while half-open
    (probes) are never more than ``half_open_calls`` at once, counting probes of an earlier
    half-open phase still in flight, and the breaker's counters stay
    consistent (no probe slot left taken once everything ended)."""
    async def scenario() -> None:
        breaker = CircuitBreaker(failure_ratio=0.5, min_calls=2, window=10, open_for=3,
                                 half_open_calls=half_open_calls)
        probes = peak = 0

        async def provider(seconds: float, fail: bool) -> None:
            nonlocal probes, peak
            probe = breaker.state is State.HALF_OPEN
            probes += probe
            peak = max(peak, probes)
            try:
                await asyncio.sleep(seconds)
                if fail:
                    raise make_error(FailureKind.SERVER_ERROR)
            finally:
                probes -= probe

        guarded = lg.guard(breaker)(provider)

        async def one(start, seconds, fail):
            await asyncio.sleep(start)
            try:
                await guarded(seconds, fail)
            except Exception:
                pass

        await asyncio.gather(*(one(*c) for c in calls))
        assert peak <= half_open_calls
        assert breaker._state.probes == 0 and breaker._state.stray == 0

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


class MinimalCircuit:
    """A CircuitStore written from its docstring alone: a counter of consecutive failures
    stands in for the window (allowed: the breaker relies only on the contract's shape)."""

    def __init__(self, *, failure_ratio, min_calls, window, open_for, half_open_calls):
        self.failure_ratio, self.min_calls, self.open_for = failure_ratio, min_calls, open_for
        self.half_open_calls = half_open_calls
        self.state, self.opened, self.rejected = State.CLOSED, 0, 0
        self.phase, self.calls, self.failures, self.opened_at = 0, 0, 0, 0.0
        self.probing = self.probed_ok = 0

    def _enter(self, state):
        self.state, self.phase = state, self.phase + 1
        self.calls = self.failures = self.probing = self.probed_ok = 0

    def allow(self, now):
        if self.state is State.OPEN:
            if now < self.opened_at + self.open_for:
                self.rejected += 1
                return None
            self._enter(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self.probing + self.probed_ok >= self.half_open_calls:
                self.rejected += 1
                return None
            self.probing += 1
        return ("phase", self.phase)

    def record(self, now, failed, ticket=None):
        if ticket != ("phase", self.phase):
            return
        if self.state is State.HALF_OPEN:
            self.probing -= 1
            if failed:
                self.force_open(now)
            else:
                self.probed_ok += 1
                if self.probed_ok >= self.half_open_calls:
                    self.force_close()
        elif self.state is State.CLOSED:
            self.calls += 1
            self.failures += failed
            if self.calls >= self.min_calls and self.failures >= self.failure_ratio * self.calls:
                self.force_open(now)

    def cancel(self, ticket=None):
        if self.state is State.HALF_OPEN and ticket == ("phase", self.phase):
            self.probing -= 1

    def retry_after(self, now):
        return max(0.0, self.opened_at + self.open_for - now) if self.state is State.OPEN else 0.0

    def counts(self, now):
        return self.calls, self.failures

    def force_open(self, now):
        self._enter(State.OPEN)
        self.opened_at, self.opened = now, self.opened + 1

    def force_close(self):
        self._enter(State.CLOSED)


async def test_circuit_breaker_drives_a_circuit_store_written_from_its_docstring() -> None:
    """The ``CircuitStore`` seam (issue 17): a minimal store written from the protocol's
    docstring alone, handed in through ``backend.circuit_state``, opens, fails fast, probes and
    closes under the breaker; the breaker reads nothing else of it (no private method)."""
    made = []

    class Backend:
        def circuit_state(self, name, **params):
            made.append(MinimalCircuit(**params))
            return made[-1]

    llm = FakeLLM([make_error(FailureKind.OVERLOADED)] * 4)
    breaker = CircuitBreaker(min_calls=4, failure_ratio=0.5, open_for=10, half_open_calls=2,
                             backend=Backend())
    assert isinstance(made[0], CircuitStore)
    guarded = lg.guard(breaker)(llm.send_message)
    for _ in range(4):
        with pytest.raises(Exception):
            await guarded("x")
    with pytest.raises(lg.CircuitOpenError) as info:
        await guarded("x")
    assert info.value.retry_after == pytest.approx(10)
    assert breaker.statistics().state == "open" and breaker.statistics().opened == 1
    await asyncio.sleep(10)
    assert await guarded("x") == "echo: x" and breaker.statistics().state == "half_open"
    assert await guarded("x") == "echo: x" and breaker.statistics().state == "closed"
    assert "state=closed" in repr(breaker)
