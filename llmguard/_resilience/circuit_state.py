"""Circuit state: the ``CircuitStore`` seam a :class:`~llmguard.CircuitBreaker` drives, and the
in-process state machine.

The state machine is a plain object whose methods take ``now``, so it is tested without a loop
and its storage can be shared (the Redis backend wraps one and shares its openings).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol, runtime_checkable

from .._core.public import public

__all__ = ["CircuitState", "CircuitStore", "State"]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@public
@runtime_checkable
class CircuitStore(Protocol):
    """What a :class:`~llmguard.CircuitBreaker` drives: one circuit's state. ``now`` is the
    caller's loop time in seconds; every method is synchronous (no I/O on the call path).

    Returned by ``backend.circuit_state(name, failure_ratio=, min_calls=, window=, open_for=,
    half_open_calls=)`` for ``CircuitBreaker(backend=...)``. The contract:

    * ``state`` is a :class:`State`; ``failure_ratio`` the configured ratio; ``opened`` (times
      it opened) and ``rejected`` (calls refused) are counters.
    * ``allow(now)`` returns ``None`` to refuse the call, else a **ticket** (any object, never
      None) naming the phase it was admitted in. Open refuses until ``open_for`` has passed
      since opening, then turns half-open; half-open admits at most ``half_open_calls`` probes
      (in flight plus succeeded); closed admits every call.
    * ``record(now, failed, ticket)`` reports how an admitted call ended (``failed``: an
      unhealthy failure). Only a call admitted in the current phase counts: a straggler (admitted
      while closed, ending after the circuit opened or while it probes) changes nothing. Closed:
      counted in a sliding ``window`` of seconds; it opens once at least ``min_calls`` were made
      and at least ``failure_ratio`` of them failed. Half-open: a failed probe reopens it, and
      ``half_open_calls`` successful probes close it (forgetting the window).
    * ``cancel(ticket)`` reports that an admitted call ended with no verdict (cancelled, or
      refused further in): a probe's slot is given back, nothing is counted.
    * ``retry_after(now)``: seconds until an open circuit admits a probe (0 when not open).
    * ``counts(now)``: ``(calls, failures)`` in the current window.
    * ``force_open(now)`` opens it as if it had opened at ``now``; ``force_close()`` closes it
      and forgets the window.
    """

    state: State
    failure_ratio: float
    opened: int
    rejected: int

    def allow(self, now: float) -> object | None: ...

    def record(self, now: float, failed: bool, ticket: object = None) -> None: ...

    def cancel(self, ticket: object = None) -> None: ...

    def retry_after(self, now: float) -> float: ...

    def counts(self, now: float) -> tuple[int, int]: ...

    def force_open(self, now: float) -> None: ...

    def force_close(self) -> None: ...


class CircuitState:
    """Closed, open, half-open over a sliding window of per-second outcome counts: the
    in-process :class:`CircuitStore`. Its tickets are phase numbers (the ``phase`` attribute
    counts state changes), so a straggler's outcome is told from a probe's."""

    __slots__ = ("failure_ratio", "min_calls", "window", "open_for", "half_open_calls",
                 "state", "opened_at", "probes", "probe_ok", "_buckets", "_calls", "_failures",
                 "opened", "rejected", "phase", "stray")

    def __init__(self, *, failure_ratio: float, min_calls: int, window: float, open_for: float,
                 half_open_calls: int) -> None:
        self.failure_ratio, self.min_calls, self.window = failure_ratio, min_calls, window
        self.open_for, self.half_open_calls = open_for, half_open_calls
        self.state = State.CLOSED
        self.opened_at = 0.0
        self.probes = self.probe_ok = 0  # half-open probes in flight / succeeded
        self._buckets: deque[list[float]] = deque()  # [second, calls, failures]
        #: Totals over the buckets, kept as they change: a call costs O(1), not O(window).
        self._calls = self._failures = 0
        self.opened = self.rejected = 0
        #: Number of the current phase (1 at first; +1 at every change of state). A call's
        #: ticket is the phase that admitted it, negated for a half-open probe.
        self.phase = 1
        #: Probes of earlier half-open phases still at the provider: they count against
        #: half_open_calls until they end, though their outcome no longer counts.
        self.stray = 0

    def counts(self, now: float) -> tuple[int, int]:
        buckets, edge = self._buckets, now - self.window
        while buckets and buckets[0][0] <= edge:
            _, calls, failures = buckets.popleft()
            self._calls -= calls
            self._failures -= failures
        return (int(self._calls), int(self._failures))

    def retry_after(self, now: float) -> float:
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.open_for - now)

    def would_allow(self, now: float) -> bool:
        """Whether ``allow(now)`` would admit a call (nothing is taken)."""
        if self.state is State.OPEN:
            return now >= self.opened_at + self.open_for
        if self.state is State.HALF_OPEN:
            return self.probes + self.probe_ok + self.stray < self.half_open_calls
        return True

    def allow(self, now: float) -> int | None:
        if self.state is State.OPEN:
            if now < self.opened_at + self.open_for:
                self.rejected += 1
                return None
            self._enter(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self.probes + self.probe_ok + self.stray >= self.half_open_calls:
                self.rejected += 1
                return None
            self.probes += 1
            return -self.phase
        return self.phase

    def cancel(self, ticket: object = None) -> None:
        if self._stray_ended(ticket):
            return
        if self.state is State.HALF_OPEN and self.probes and ticket in (None, -self.phase):
            self.probes -= 1

    def _stray_ended(self, ticket: object) -> bool:
        """True (and uncounted) for a call admitted in an earlier phase."""
        if ticket is None or ticket in (self.phase, -self.phase):
            return False
        if isinstance(ticket, int) and ticket < 0:
            self.stray = max(0, self.stray - 1)
        return True

    def record(self, now: float, failed: bool, ticket: object = None) -> None:
        """``ticket`` None counts the outcome in the current phase (direct use, tests)."""
        # ``_stray_ended(ticket)``, its common case (this phase's ticket) without the call
        if ticket is not None and ticket != self.phase and self._stray_ended(ticket):
            return  # a straggler from an earlier phase: neither a probe nor in this window
        state = self.state
        if state is not State.CLOSED:
            self._record_open(now, failed, state)
            return
        second = now // 1.0  # its second (loop time is never negative)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        self._calls += 1
        if failed:  # (a success adds no failure: nothing to count)
            bucket[2] += 1
            self._failures += 1
        edge = now - self.window  # ``counts(now)``, written out (every call the breaker sees)
        while buckets and buckets[0][0] <= edge:
            _, calls, failures = buckets.popleft()
            self._calls -= calls
            self._failures -= failures
        calls = self._calls
        if calls >= self.min_calls and self._failures >= self.failure_ratio * calls:
            self.force_open(now)

    def _record_open(self, now: float, failed: bool, state: State) -> None:
        """``record`` in the half-open and open states."""
        if state is State.HALF_OPEN:
            self.probes = max(0, self.probes - 1)
            if failed:
                self.force_open(now)
            else:
                self.probe_ok += 1
                if self.probe_ok >= self.half_open_calls:
                    self.force_close()

    def _enter(self, state: State) -> None:
        self.stray += self.probes  # still at the provider, now of an earlier phase
        self.state, self.probes, self.probe_ok = state, 0, 0
        self.phase += 1
        self._buckets.clear()
        self._calls = self._failures = 0

    def force_open(self, now: float) -> None:
        self._enter(State.OPEN)
        self.opened_at = now
        self.opened += 1

    def force_close(self) -> None:
        self._enter(State.CLOSED)

    def __repr__(self) -> str:
        return (f"<CircuitState {self.state.value} phase={self.phase} probes={self.probes} "
                f"opened={self.opened} rejected={self.rejected}>")
