"""Circuit breaking: stop calling a provider that is failing, probe it, resume when it recovers.

The layer is a few lines around a :class:`~llmguard.backends.CircuitStore` (``circuit_state.py``): the
in-process state machine, or a backend's (Redis shares openings across processes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core import clock, events
from .._core.call import Call, loop_of
from .._core.check import number, text
from .._core.classify import classify
from .._core.errors import AdmissionError, CircuitOpenError
from .._core.events import EventKind
from .._core.layer import Handler
from .._core.public import public
from .._core.stats import LayerStats
from .._core.stream import Stream
from .circuit_state import CircuitState, CircuitStore, State

__all__ = ["CircuitBreaker", "CircuitState", "CircuitStats", "CircuitStore", "State"]

_ENTERED = {State.OPEN: EventKind.CIRCUIT_OPENED, State.HALF_OPEN: EventKind.CIRCUIT_HALF_OPEN,
            State.CLOSED: EventKind.CIRCUIT_CLOSED}


@public
@dataclass(frozen=True, slots=True)
class CircuitStats(LayerStats):
    state: str
    #: Calls and unhealthy failures in the current window.
    calls: int
    failures: int
    #: Times the circuit opened, and calls it refused while open.
    opened: int
    rejected: int
    #: Seconds until an open circuit lets a probe through (0 when not open).
    retry_after: float


@public
class CircuitBreaker:
    """Layer: fail fast with :class:`llmguard.CircuitOpenError` while the provider is failing.

    The circuit opens when at least ``failure_ratio`` of the calls in the last ``window``
    seconds failed (and at least ``min_calls`` were made); after ``open_for`` seconds it lets
    ``half_open_calls`` probes through, closing when they all succeed and reopening on a failure.
    Only failures that say the provider is unhealthy count (overloaded, timeout, connection,
    server error); a 429 is the provider pacing us (Retry waits out its pause, RateLimit learns
    from it), a bad request or a content-policy refusal is the caller's problem, a cancellation
    is nothing. ``force_open()`` / ``force_close()`` set it by hand.
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
            raise TypeError(f"backend must be a llmguard.backends.redis.RedisBackend (or an object "
                            f"whose circuit_state(name, **params) returns a CircuitStore) or "
                            f"None, got {backend!r}")
        params = dict(failure_ratio=failure_ratio, min_calls=min_calls, window=window,
                      open_for=open_for, half_open_calls=half_open_calls)
        # A backend (llmguard.backends.redis.RedisBackend) shares openings across processes.
        self._state: CircuitStore = (CircuitState(**params) if backend is None
                                     else backend.circuit_state(name or "default", **params))
        self._name = name

    @property
    def state(self) -> State:
        return self._state.state

    def force_open(self) -> None:
        """Open the circuit now (e.g. during a known outage)."""
        self._state.force_open(clock.now())
        self._forced(EventKind.CIRCUIT_OPENED)

    def force_close(self) -> None:
        """Close the circuit now and forget its failures."""
        self._state.force_close()
        self._forced(EventKind.CIRCUIT_CLOSED)

    def _forced(self, kind: EventKind) -> None:
        if events.subscribers:  # by hand: no call it happened to
            events.emit(events.Event(kind, "circuit_breaker", detail=self._name))

    def statistics(self) -> CircuitStats:
        s = self._state
        now = clock.now()
        calls, failures = s.counts(now)
        return CircuitStats(s.state.value, calls, failures, s.opened, s.rejected,
                            s.retry_after(now))

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        loop = call.loop or loop_of(call)
        state = self._state
        if type(state) is CircuitState and state.state is State.CLOSED:
            ticket = state.phase  # ``allow``'s closed case: no clock read, nothing changes
        else:
            before = state.state if events.subscribers else None
            ticket = state.allow(loop.time())
            if before is not None:
                self._moved(call, before)
        if ticket is None:
            wait = state.retry_after(loop.time())
            raise call.rejected("circuit_breaker", CircuitOpenError(
                f"circuit {self._name or call.name or ''} is {state.state.value}: the provider "
                f"failed {state.failure_ratio:.0%}+ of recent calls; failing fast, next probe in "
                f"{wait:.1f} s (use a Fallback to route around it, or force_close())",
                retry_after=wait,
            ))
        try:
            result = await call_next(call)
        except Exception as exc:
            if isinstance(exc, AdmissionError):
                state.cancel(ticket)
            else:
                self._record(call, classify(exc).kind.unhealthy, ticket)
            raise
        except BaseException:
            state.cancel(ticket)
            raise
        if isinstance(result, Stream):
            result.defer(self._stream_end(call, ticket))
        elif events.subscribers:
            self._record(call, False, ticket)
        else:  # ``_record``'s common case (nothing to publish), in this frame: every success
            state.record(loop.time(), False, ticket)
        return result

    def _stream_end(self, call: Call, ticket: object) -> Callable[[BaseException | None], None]:
        """What a streamed answer's end records. Made here, not in ``__call__``: a nested
        function there makes every call's frame hold its captured variables in cells (four
        objects per call in flight, streamed or not)."""
        def end(error: BaseException | None) -> None:
            if error is None:
                self._record(call, False, ticket)
            elif isinstance(error, Exception):
                self._record(call, classify(error).kind.unhealthy, ticket)
            else:  # closed early or cancelled: no verdict on the provider
                self._state.cancel(ticket)

        return end

    def _record(self, call: Call, failed: bool, ticket: object) -> None:
        state = self._state
        before = state.state if events.subscribers else None
        state.record((call.loop or loop_of(call)).time(), failed, ticket)
        if before is not None:
            self._moved(call, before)

    def _moved(self, call: Call, before: State) -> None:
        """Publish the state change the last allow or record made, if it made one."""
        after = self._state.state
        if after is not before:
            call.emit(_ENTERED[after], "circuit_breaker", detail=self._name or call.name)

    def __repr__(self) -> str:
        s = self._state
        return f"<CircuitBreaker state={s.state.value} opened={s.opened} rejected={s.rejected}>"
