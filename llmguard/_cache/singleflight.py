"""How a Cache runs its flights: the first caller inline, joiners, and the take-over.

A miss with nobody else asking costs no task, no extra loop turn, no coroutine and no
:class:`Flight`: the first caller of a key runs the call in ``Cache.__call__``'s own frame, the
key marked as under way by its call's record; the second caller to ask makes the Flight (and
its own future). The runner then stores the answer and hands each joiner a copy. What a
flight is and why a take-over restarts the call (instead of moving it) is in ``flight.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core import events
from .._core.call import Call, loop_of
from .._core.events import CallRecord
from .._core.layer import Handler
from .._core.stream import Stream
from .flight import LEAD, Flight, start
from .stream import Tee, fresh

__all__ = ["SHARED", "SingleFlight"]

#: What :meth:`SingleFlight._answered` returns when a shared store's ``set`` is to be awaited.
SHARED: Any = object()


def _no_op(key: str) -> None:
    """A store without fill locks has nothing to release."""


class SingleFlight:
    """The single-flight half of :class:`~llmguard.Cache`: one flight per key under way.

    The subclass stores answers: ``_keep`` (synchronous: True if stored, False if not to be
    stored, None if a shared store's ``_set`` must be awaited) and ``_set``."""

    __slots__ = ("_flights", "_coalesced", "_abandon", "_copies")

    def __init__(self, abandon: Callable[[str], Any] | None, copies: bool) -> None:
        self._flights: dict[str, Flight] = {}
        self._coalesced = 0
        #: The store's hook to release a fill lock when a miss will not be filled.
        self._abandon = _no_op if abandon is None else abandon
        #: The store keeps its own copy of what it is given (the answer can go to one caller).
        self._copies = copies

    def _keep(self, key: str, result: Any, degraded: bool) -> bool | None:
        raise NotImplementedError

    async def _set(self, key: str, result: Any) -> bool:
        raise NotImplementedError

    async def _store(self, key: str, result: Any, degraded: bool = False) -> bool:
        """Store ``result`` unless ``degraded`` or refused; True if the store was given it."""
        kept = self._keep(key, result, degraded)
        return await self._set(key, result) if kept is None else kept

    async def _join(self, key: str, call: Call, call_next: Handler, flight: Any) -> Any:
        """Wait for ``flight``'s answer (the record of a first caller nobody joined yet: this
        caller makes its Flight); take the flight over if told to."""
        if type(flight) is not Flight:
            flight = self._flights[key] = Flight(flight)
        self._coalesced += 1
        call.record.cache = "coalesced"
        call.emit(events.EventKind.CACHE_HIT, "cache", detail="coalesced")
        loop = call.loop or loop_of(call)
        waiter = flight.join(loop)
        while True:
            try:
                result = await waiter
            except asyncio.CancelledError:
                self._left(key, flight, waiter)
                raise
            if result is not LEAD:
                break
            waiter = flight.take_over(loop, call.record)
            flight.task = start(loop, self._fill(key, call, call_next, flight, waiter))
        flight.tell(waiter, call.record)
        return await result.open() if type(result) is Tee else result

    def _left(self, key: str, flight: Flight, waiter: asyncio.Future[Any]) -> None:
        """A joiner was cancelled: before its answer came, after it, or after it was told to
        take the flight over (then it passes that on)."""
        if not waiter.done() or waiter.cancelled():
            if flight.leave(waiter):  # the last one out of a take-over's task: nobody wants it
                flight.task.cancel()  # type: ignore[union-attr]
                self._abandon(key)  # here too: a task cancelled before it started runs nothing
                self._land(key, flight)
        elif waiter.result() is LEAD:
            flight.live -= 1
            if not flight.hand_over():
                self._abandon(key)
                self._land(key, flight)
        elif type(waiter.result()) is Tee:
            waiter.result().forfeit()  # counted as a reader when the stream started

    def _fell(self, key: str, record: CallRecord, error: BaseException) -> None:
        """The first caller's call (of ``record``), run inline, raised ``error``. Cancelled (or
        closed) while callers wait: the first of them starts it again. Else they all get
        ``error``, and nothing is stored."""
        flight = self._flights.get(key)
        if (type(flight) is Flight and flight.record is record
                and isinstance(error, (asyncio.CancelledError, GeneratorExit))
                and flight.hand_over()):
            return
        self._abandon(key)
        flight = self._landing(key, record)
        if flight is not None:
            flight.fail(error)

    def _answered(self, key: str, entry: Any, result: Any, degraded: bool) -> Any:
        """The call of ``entry`` answered ``result``: store it if it is to be stored (for an
        in-process store), land the flight and hand every joiner its own copy; returns the
        runner's (a :class:`Tee` to open, for a stream), or :data:`SHARED`: a shared store's
        ``set`` is to be awaited first (:meth:`_shared`)."""
        # An alternate's or a default's answer (a Fallback below) answers this call, not the
        # question its key asks: it is never stored, so a hit is always the call's own answer.
        if type(result) is not dict and isinstance(result, Stream):  # stored once read
            result.defer(lambda error: error is not None and self._abandon(key))
            flight = self._landing(key, entry)
            waiting = [] if flight is None else flight.resolved()
            tee = Tee(result, len(waiting) + 1,
                      lambda recording: self._store(key, recording, degraded))
            for waiter in waiting:
                waiter.set_result(tee)
            return tee
        try:
            kept = self._keep(key, result, degraded)
        except BaseException as error:  # ``cache_if`` raised: every joiner gets its error too
            flight = self._landing(key, entry)
            if flight is not None:
                flight.fail(error)
            raise
        if kept is None:
            return SHARED
        # The answer itself goes to the runner unless the store holds it; the others get copies.
        return self._hand(self._landing(key, entry), result, not kept or self._copies)

    async def _shared(self, key: str, entry: Any, result: Any) -> Any:
        """:meth:`_answered` for a shared store: await its ``set``, then hand the answer out."""
        try:
            kept = await self._set(key, result)
        except BaseException:  # cancelled while a shared store writes: the answer is here
            self._hand(self._landing(key, entry), result, False)
            raise
        return self._hand(self._landing(key, entry), result, not kept or self._copies)

    async def _run(self, key: str, call: Call, call_next: Handler, flight: Flight) -> Any:
        """A take-over's call: run it and hand its answer to every joiner; returns the
        owner's (a :class:`Tee` to open, for a stream)."""
        try:
            result = await call_next(call)
        except BaseException as exc:  # started twice already: everyone gets the error
            self._abandon(key)
            self._landing(key, flight)
            flight.fail(exc)
            raise
        value = self._answered(key, flight, result, call.record.fallback is not None)
        return await self._shared(key, flight, result) if value is SHARED else value

    async def _fill(self, key: str, call: Call, call_next: Handler, flight: Flight,
                    owner: asyncio.Future[Any]) -> None:
        """A take-over's task: run the owner's call for the owner and every joiner."""
        try:
            value = await self._run(key, call, call_next, flight)
        except Exception:
            return  # every waiter has the error: the task itself ends quietly
        if not owner.done():
            owner.set_result(value)
        elif type(value) is Tee:
            value.forfeit()  # the owner left: its reader will never open

    @staticmethod
    def _hand(flight: Flight | None, result: Any, mine: bool) -> Any:
        """Give each joiner of ``flight`` still waiting its own copy of ``result``; returns
        the runner's."""
        if flight is not None and flight.waiters:  # most misses: nobody joined
            for waiter in flight.resolved():
                waiter.set_result(fresh(result))
        return result if mine else fresh(result)

    def _landing(self, key: str, entry: Any) -> Flight | None:
        """Land ``entry`` (a flight, or the record of a first caller running its call inline)
        so a later call starts a fresh flight; returns the Flight callers joined, if any."""
        flights = self._flights
        flight = flights.get(key)
        if flight is entry:
            del flights[key]
        elif type(flight) is Flight and flight.record is entry:  # joiners came
            del flights[key]
        else:  # already landed (a later call's flight may be under way)
            return entry if type(entry) is Flight else None
        if type(flight) is Flight:
            flight.landed = True
            return flight
        return None

    def _land(self, key: str, flight: Flight) -> None:  # a later call starts a fresh flight
        flight.landed = True
        if self._flights.get(key) is flight:
            del self._flights[key]
