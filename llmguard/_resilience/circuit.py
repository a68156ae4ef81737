"""Circuit breaking: stop calling a provider that is failing, probe it, resume when it recovers.

The state machine is a plain object whose methods take ``now``, so it is tested without a loop
and its storage can be shared (a Redis backend keeps the same three numbers per circuit).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from .._core.check import number, text
from .._core import clock
from .._core.classify import classify
from .._core.call import Call, Handler
from .._core.errors import AdmissionError, CircuitOpenError
from .._core.stream import Stream
from .._core.public import public

__all__ = ["CircuitBreaker", "CircuitState", "CircuitStats", "State"]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@public
@dataclass(frozen=True, slots=True)
class CircuitStats:
    state: str
    #: Calls and unhealthy failures in the current window.
    calls: int
    failures: int
    #: Times the circuit opened, and calls it refused while open.
    opened: int
    rejected: int
    #: Seconds until an open circuit lets a probe through (0 when not open).
    retry_after: float


class CircuitState:
    """Closed, open, half-open over a sliding window of per-second outcome counts.

    ``allow(now)`` admits or refuses a call (and takes a probe slot when half-open);
    ``record(now, failed)`` reports its outcome; ``cancel()`` returns a probe slot unused.
    """

    __slots__ = ("failure_ratio", "min_calls", "window", "open_for", "half_open_calls",
                 "state", "opened_at", "probes", "probe_ok", "_buckets", "opened", "rejected")

    def __init__(self, *, failure_ratio: float, min_calls: int, window: float, open_for: float,
                 half_open_calls: int) -> None:
        self.failure_ratio, self.min_calls, self.window = failure_ratio, min_calls, window
        self.open_for, self.half_open_calls = open_for, half_open_calls
        self.state = State.CLOSED
        self.opened_at = 0.0
        self.probes = self.probe_ok = 0  # half-open probes in flight / succeeded
        self._buckets: deque[list[float]] = deque()  # [second, calls, failures]
        self.opened = self.rejected = 0

    def _counts(self, now: float) -> tuple[int, int]:
        while self._buckets and self._buckets[0][0] <= now - self.window:
            self._buckets.popleft()
        return (int(sum(b[1] for b in self._buckets)), int(sum(b[2] for b in self._buckets)))

    def retry_after(self, now: float) -> float:
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.open_for - now)

    def allow(self, now: float) -> bool:
        if self.state is State.OPEN:
            if now < self.opened_at + self.open_for:
                self.rejected += 1
                return False
            self.state, self.probes, self.probe_ok = State.HALF_OPEN, 0, 0
        if self.state is State.HALF_OPEN:
            if self.probes + self.probe_ok >= self.half_open_calls:
                self.rejected += 1
                return False
            self.probes += 1
        return True

    def cancel(self) -> None:
        if self.state is State.HALF_OPEN and self.probes:
            self.probes -= 1

    def record(self, now: float, failed: bool) -> None:
        if self.state is State.HALF_OPEN:
            self.probes = max(0, self.probes - 1)
            if failed:
                self._open(now)
            else:
                self.probe_ok += 1
                if self.probe_ok >= self.half_open_calls:
                    self.force_close()
            return
        if self.state is State.OPEN:
            return  # a straggler from before the circuit opened
        second = float(int(now))
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][1] += 1
        self._buckets[-1][2] += failed
        calls, failures = self._counts(now)
        if calls >= self.min_calls and failures >= self.failure_ratio * calls:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state, self.opened_at = State.OPEN, now
        self.opened += 1
        self._buckets.clear()

    def force_open(self, now: float) -> None:
        self._open(now)

    def force_close(self) -> None:
        self.state, self.probes, self.probe_ok = State.CLOSED, 0, 0
        self._buckets.clear()


@public
class CircuitBreaker:
    """Layer: fail fast with :class:`llmguard.CircuitOpenError` while the provider is failing.

    The circuit opens when at least ``failure_ratio`` of the calls in the last ``window``
    seconds failed (and at least ``min_calls`` were made); after ``open_for`` seconds it lets
    ``half_open_calls`` probes through, closing when they all succeed and reopening on a failure.
    Only failures that say the provider is unhealthy count (rate limited, overloaded, timeout,
    connection, server error); a bad request or a content-policy refusal is the caller's problem,
    a cancellation is nothing. ``force_open()`` / ``force_close()`` set it by hand.
    ``backend=RedisBackend(url)`` shares openings: one process opening the circuit (named
    ``name``) opens it in every process within half a second.
    """

    __slots__ = ("_state", "_name")

    def __init__(self, *, failure_ratio: float = 0.5, min_calls: int = 20, window: float = 30,
                 open_for: float = 15, half_open_calls: int = 3, name: str | None = None,
                 backend: Any = None) -> None:
        number("failure_ratio", failure_ratio, high=1, hint="; e.g. 0.5 opens at half failing")
        for arg, value in (("min_calls", min_calls), ("half_open_calls", half_open_calls)):
            number(arg, value, integer=True, low=1, low_open=False)
        for arg, value in (("window", window), ("open_for", open_for)):
            number(arg, value, unit=" of seconds")
        if name is not None:
            text("name", name, hint="; or None")
        if backend is not None and not callable(getattr(backend, "circuit_state", None)):
            raise TypeError(f"backend must be a llmguard.backends.redis.RedisBackend or None, "
                            f"got {backend!r}")
        params = dict(failure_ratio=failure_ratio, min_calls=min_calls, window=window,
                      open_for=open_for, half_open_calls=half_open_calls)
        # A backend (llmguard.backends.redis.RedisBackend) shares openings across processes.
        self._state = (CircuitState(**params) if backend is None
                       else backend.circuit_state(name or "default", **params))
        self._name = name

    @property
    def state(self) -> State:
        return self._state.state

    def force_open(self) -> None:
        """Open the circuit now (e.g. during a known outage)."""
        self._state.force_open(clock.now())

    def force_close(self) -> None:
        """Close the circuit now and forget its failures."""
        self._state.force_close()

    def statistics(self) -> CircuitStats:
        s = self._state
        now = clock.now()
        calls, failures = s._counts(now)
        return CircuitStats(s.state.value, calls, failures, s.opened, s.rejected,
                            s.retry_after(now))

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        loop = asyncio.get_running_loop()
        state = self._state
        if not state.allow(loop.time()):
            wait = state.retry_after(loop.time())
            raise CircuitOpenError(
                f"circuit {self._name or call.name or ''} is {state.state.value}: the provider "
                f"failed {state.failure_ratio:.0%}+ of recent calls; failing fast, next probe in "
                f"{wait:.1f} s (use a Fallback to route around it, or force_close())",
                retry_after=wait,
            )
        try:
            result = await call_next(call)
        except Exception as exc:
            if isinstance(exc, AdmissionError):
                state.cancel()
            else:
                state.record(loop.time(), classify(exc).kind.unhealthy)
            raise
        except BaseException:
            state.cancel()
            raise
        if isinstance(result, Stream):
            def end(error: BaseException | None) -> None:
                if error is None:
                    state.record(loop.time(), False)
                elif isinstance(error, Exception):
                    state.record(loop.time(), classify(error).kind.unhealthy)
                else:  # closed early or cancelled: no verdict on the provider
                    state.cancel()

            result.defer(end)
        else:
            state.record(loop.time(), False)
        return result

    def __repr__(self) -> str:
        s = self._state
        return f"<CircuitBreaker state={s.state.value} opened={s.opened} rejected={s.rejected}>"
