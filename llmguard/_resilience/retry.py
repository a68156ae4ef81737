"""Retry with capped exponential backoff and full jitter, Retry-After, deadlines and a budget.

Why not tenacity or stamina: neither knows that a 429 "insufficient_quota" is final while a 429
"slow down" is not, neither reads Retry-After from an LLM SDK's exception, and neither shares a
retry budget across calls. The delay arithmetic is a pure function, tested directly.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._core import clock
from .._core.attempt import Attempt
from .._core.call import Call, loop_of
from .._core.check import number
from .._core.check import seed as check_seed
from .._core.classify import FailureKind, classify
from .._core.errors import AdmissionError
from .._core.events import EventKind
from .._core.layer import Handler
from .._core.public import public
from .._core.stats import LayerStats
from .._core.stream import Stream
from .budget import RetryBudget
from .deadline import attempt_until_sent

__all__ = ["Retry", "RetryStats"]


@public
@dataclass(frozen=True, slots=True)
class RetryStats(LayerStats):
    calls: int
    retries: int
    #: Retries by the failure kind that caused them (``"result"`` for retried results).
    retries_by_kind: dict[str, int]
    #: Calls that still failed after at least one retry.
    gave_up: int
    #: Retries refused by the retry budget.
    budget_exhausted: int


def _predicate(on: Any) -> Callable[[BaseException], bool]:
    if on is None:
        return lambda exc: not isinstance(exc, AdmissionError) and classify(exc).retryable
    if isinstance(on, FailureKind):
        on = (on,)
    if isinstance(on, type) and issubclass(on, BaseException):
        return lambda exc: isinstance(exc, on)
    if isinstance(on, Iterable) and not isinstance(on, (str, bytes)):
        items = tuple(on)
        kinds = frozenset(i for i in items if isinstance(i, FailureKind))
        types = tuple(i for i in items if isinstance(i, type) and issubclass(i, BaseException))
        if len(kinds) + len(types) != len(items) or not items:
            raise TypeError(f"on= takes exception types and FailureKinds, got {on!r}")
        return lambda exc: isinstance(exc, types) or (bool(kinds) and classify(exc).kind in kinds)
    if callable(on):
        return on
    raise TypeError(
        f"on= must be an exception type, a FailureKind, a list of those, or a predicate "
        f"exc -> bool; got {on!r}"
    )


def _seconds(name: str, value: Any) -> float:
    return float(number(name, value, low_open=False, unit=" of seconds"))


@public
class Retry:
    """Layer: retry failed attempts with capped, jittered exponential backoff.

    * ``attempts``: total attempts including the first.
    * ``on``: what to retry: exception types, :class:`FailureKind` s, a list of those, or a
      predicate ``exc -> bool``. Default: retryable kinds (rate limited, overloaded, timeout,
      connection, server error), never llmguard's own admission refusals.
    * ``retry_if_result``: ``result -> bool`` to retry results (an empty answer, say).
    * ``backoff`` / ``max_delay``: delay ceiling ``backoff * 2**(n-1)`` capped at ``max_delay``,
      full jitter. A Retry-After from the provider is waited first, plus half to all of that
      ceiling so callers told the same instant do not collide again. ``max_delay`` bounds the
      jitter, never the Retry-After itself (retrying earlier than asked is a certain 429); a
      Retry-After beyond the deadline gives up at once. A learning rate limit below that
      paused its key holds the retry itself until the server admits again, which it may learn
      is sooner than the Retry-After (a clock minute resetting before LiteLLM's constant
      ``Retry-After: 60``): it says so in ``Attempt.resume_at`` and Retry waits no longer.
    * ``deadline``: seconds for all attempts together; sets ``call.deadline`` for inner layers.
      An attempt still queued for admission when it passes ends with :class:`AdmissionTimeout`
      (whatever the layers below); one already sent runs on (``deadline.py``).
    * ``budget``: a :class:`RetryBudget` (or a ratio) shared by every call through this layer.

    ``CancelledError`` is never retried. A streamed answer is retried only before its first
    chunk (the innermost handler reads it inside the pipeline); after that errors reach the
    consumer unchanged. When attempts run out, the last error is raised with a note listing
    every attempt's error and delay.
    """

    __slots__ = ("attempts", "backoff", "max_delay", "deadline", "budget", "_should",
                 "_retry_result", "_rng", "_calls", "_retries", "_by_kind", "_gave_up",
                 "_exhausted")

    def __init__(
        self,
        *,
        attempts: int = 3,
        on: Any = None,
        retry_if_result: Callable[[Any], bool] | None = None,
        backoff: float = 0.5,
        max_delay: float = 30.0,
        deadline: float | None = None,
        budget: RetryBudget | float | None = None,
        seed: int | None = None,
    ) -> None:
        self.attempts = number("attempts", attempts, integer=True, low=1, low_open=False,
                               hint=" (1 = no retry)")
        self.backoff = _seconds("backoff", backoff)
        self.max_delay = _seconds("max_delay", max_delay)
        deadline = number("deadline", deadline, optional=True, unit=" of seconds",
                          hint="; pass None for no deadline")
        self.deadline = None if deadline is None else float(deadline)
        if isinstance(budget, (int, float)) and not isinstance(budget, bool):
            budget = RetryBudget(number("budget", budget, low_open=False, high=10,
                                        what="a RetryBudget or a ratio of retries per call in [0, 10]"))
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or a ratio, got {budget!r}")
        self.budget = budget
        if retry_if_result is not None and not callable(retry_if_result):
            raise TypeError(f"retry_if_result must be a callable result -> bool, got {retry_if_result!r}")
        self._should = _predicate(on)
        self._retry_result = retry_if_result
        self._rng = random.Random(check_seed(seed))
        self._calls = self._retries = self._gave_up = self._exhausted = 0
        self._by_kind: Counter[str] = Counter()

    def statistics(self) -> RetryStats:
        return RetryStats(self._calls, self._retries, dict(self._by_kind), self._gave_up,
                          self._exhausted)

    def _delay(self, attempt: int, exc: BaseException | None, end: float | None,
               now: float, resume_at: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when it must not happen
        (``resume_at``: when a rate limit below holding the retry lets it go, no later than
        the Retry-After; ``Attempt.resume_at``)."""
        retry_after = None if exc is None else classify(exc).retry_after
        if retry_after is not None and resume_at is not None:
            retry_after = min(retry_after, max(0.0, resume_at - now))
        if retry_after is None:
            delay = clock.backoff(attempt, self.backoff, self.max_delay, self._rng.random())
        else:
            # What the provider asked, plus "equal jitter" (half to all of the backoff ceiling):
            # callers told the same Retry-After must not return at the same instant, and with
            # full jitter too many still do (against a saturated 600 RPM quota: 2,470 attempts
            # and 1.5% of calls lost, against 2,315 and none; benchmarks/bench_retry.py).
            # Retry-After is a floor (earlier is a certain 429); the deadline below may give up.
            ceiling = clock.backoff(attempt, self.backoff, self.max_delay)
            delay = max(retry_after, min(retry_after + ceiling * self._rng.uniform(0.5, 1.0),
                                         self.max_delay))
        if end is not None and now + delay >= end:
            return None
        if self.budget is not None and not self.budget.try_spend(now):
            self._exhausted += 1
            return None
        return delay

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        loop = call.loop or loop_of(call)
        self._calls += 1
        end = None
        if self.budget is not None or self.deadline is not None:  # else no clock read
            now = loop.time()
            if self.budget is not None:
                self.budget.record_call(now)
            if self.deadline is not None:
                end = now + self.deadline
        outer = call.current  # (its ``deadline`` is ``call.deadline``, without the property)
        if end is None or (outer.deadline is not None and outer.deadline < end):
            end = outer.deadline
        # Each attempt is a new Attempt (our deadline, nothing of the previous one) and nothing
        # of an attempt outlives the call: a Fallback above us gets back its own. The attempts
        # run in this frame (one coroutine per call); the history of errors is built only once
        # an attempt fails.
        history: list[str] | None = None
        attempt = 1
        try:
            while True:
                # (``parent`` by position: a keyword makes the class call build a dict)
                call.current = Attempt(attempt, end, outer)
                try:
                    # without a deadline, the attempt awaited here: a coroutine less per call
                    result = await (call_next(call) if end is None
                                    else attempt_until_sent(call, call_next, end))
                except Exception as exc:
                    now = loop.time()
                    delay = None
                    if attempt < self.attempts and self._should(exc):
                        delay = self._delay(attempt, exc, end, now, call.current.resume_at)
                    if delay is None:
                        self._gave_up += attempt > 1
                        if history:
                            exc.add_note(_history(history, attempt, exc))
                        raise
                    kind, error = classify(exc).kind.value, exc
                    line = f"attempt {attempt}: {type(exc).__name__}: {exc} (waited {delay:.2f} s)"
                else:
                    if (self._retry_result is None or isinstance(result, Stream)
                            or attempt >= self.attempts or not self._retry_result(result)):
                        return result
                    delay = self._delay(attempt, None, end, loop.time())
                    if delay is None:
                        return result
                    kind, error = "result", None
                    line = f"attempt {attempt}: result rejected (waited {delay:.2f} s)"
                if history is None:
                    history = []
                history.append(line)
                self._retries += 1
                self._by_kind[kind] += 1
                call.record.retries += 1
                call.record.delays += (delay,)
                call.emit(EventKind.RETRY_SCHEDULED, "retry", delay=delay, error=error)
                await asyncio.sleep(delay)
                attempt += 1
        finally:
            call.current = outer

    def __repr__(self) -> str:
        return (f"Retry(attempts={self.attempts}, backoff={self.backoff}, "
                f"max_delay={self.max_delay}, calls={self._calls}, retries={self._retries})")


def _history(history: list[str], attempt: int, exc: BaseException) -> str:
    lines = [f"llmguard.Retry gave up after {attempt} attempts:", *history,
             f"attempt {attempt}: {type(exc).__name__}: {exc} (final)"]
    return "\n  ".join(lines)
