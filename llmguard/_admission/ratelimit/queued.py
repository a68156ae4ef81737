"""Ours admitted but still queued below: reservations whose calls wait in an inner limiter.

RateLimit admits a call, then an inner ConcurrencyLimit (AdaptiveConcurrency, a Router, a
nested RateLimit) may make it wait for a slot: the provider sees it only as it leaves that
queue, when its reservation moves to then (:mod:`.move`). Until it does, it is ours but not at
the server, and every reading of the server's answers against ours must know it: a header's
``remaining`` (:mod:`.reading`) does not count it yet, so what it leaves us is ``remaining``
less these too; a 429 (:func:`.refusal.queued`) and a burst's readings (:func:`.calibration.
unread`) did not see it either. Inferred from the order of admissions instead, a reading of the
first call sent from the queue (3 slots, a minute's 60 admitted at :40) read the 54 still
queued as counted by the server: 54 more admitted at once, queued behind them, and each minute
after sent only as many as there are slots (1.8x the ideal time).

A call that leaves the queue goes before ours still queued behind it: with no room for it
(the window's count full of their claims: at each minute RateLimit admits a quota of calls the
slots cannot send in it), the newest of them give way, refunded (:func:`give_way`), and each
takes room anew as its own call leaves the queue. Else the leaving calls wait for the next
window holding the slots, and each minute sends as many as there are slots.

So the inner limiter says it (``Call.queueing``, on its slow path only: a call let through at
once costs nothing): the reservation's entry is marked (:class:`Queued`, numbered in order, so
a reading knows which of ours it subtracted as queued), and unmarked as it leaves (moved, or
refunded: :meth:`.window.Window.adjust`). A call already waiting ahead of RateLimit's line
for room (it left the queue before ours behind it were marked: the line admitted them at the
same instant) is served the same way as they are marked (:meth:`MarksQueued.make_way`).
Everything here but the backend's methods takes no clock: tested directly."""

from __future__ import annotations

from asyncio import get_running_loop
from typing import Any

from .log import Log

__all__ = ["MarksQueued", "Queued", "give_way", "left", "roomy", "subtracted"]


class Queued:
    """A window's entries queued below now (by mark, oldest first), their requests, and the
    marks numbered so far (an entry's ``queued`` is its mark, 0 when not queued)."""

    __slots__ = ("entries", "requests", "marks")

    def __init__(self) -> None:
        self.entries: dict[int, Any] = {}
        self.requests = self.marks = 0

    def newest(self) -> Any:
        """The entry queued below last (there must be one)."""
        return next(reversed(self.entries.values()))

    def units(self, tokens: bool) -> int:
        """Requests (or ``tokens``, as counted now: a calibrated factor rescales ours not
        settled, queued ones too, so no sum is kept) of ours queued below now."""
        if not tokens:
            return self.requests
        return sum(entry.tokens for entry in self.entries.values())

    def mark(self, entry: Any) -> None:
        """``entry``'s call waits in an inner queue from now (once; a refunded one is not)."""
        if not entry.queued and entry.live:
            self.marks += 1
            entry.queued = self.marks
            self.entries[self.marks] = entry
            self.requests += 1

    def unmark(self, entry: Any) -> None:
        """``entry``'s call left the inner queue (sent, moved, or refunded)."""
        if entry.queued:
            del self.entries[entry.queued]
            entry.queued = 0
            self.requests -= 1


class MarksQueued:
    """The in-memory backend's ``queued(key, ticket, waits)`` and ``make_way(key, quotas,
    tokens)`` (optional beside ``move``: :class:`.move.MovesNow`)."""

    __slots__ = ()
    _windows: dict[Any, Any]

    def queued(self, key: Any, ticket: Any, waits: bool) -> None:
        """``ticket``'s call waits in an inner queue from now (``waits``), or no longer."""
        window = self._windows.get(key)
        if window is not None:
            (window.queued.mark if waits else window.queued.unmark)(ticket)

    def roomy(self, key: Any, claims: int, tokens: int) -> bool:
        """True when ``claims`` more requests of ``tokens`` surely fit in ``key``'s quotas now
        (:func:`roomy`): the calls of ours waiting below may go there unreserved (``held``)."""
        window = self._windows.get(key)
        return window is not None and roomy(window, claims, tokens)

    def make_way(self, key: Any, quotas: Any, tokens: int) -> Any:
        """A reservation of ``tokens`` now for a call that left an inner queue and waits ahead
        of the line, room made by ours queued behind it (:func:`give_way`); None: none."""
        window = self._windows.get(key)
        if window is None or window.quotas is not quotas:
            return None  # (``reserve`` made it, or will: nothing queued in it to give way)
        return give_way(window, get_running_loop().time(), tokens)


def subtracted(mark: int, marks: int) -> bool:
    """True when an entry marked ``mark`` (its ``queued``, read before it was unmarked) was
    queued below as a reading made with ``marks`` marked so far read the server's count: that
    reading subtracted it as not at the server yet, so its refund gives it back."""
    return 0 < mark <= marks


def left(window: Any, entry: Any, tokens: int, live: int) -> None:
    """``entry``, queued below, left the inner queue as ``window`` changes it to ``tokens``
    and ``live`` (moved: refunded, and counted anew; refunded, never sent): a cap that
    counted it as queued below (admitted before the ones its reading took off, which
    ``Window.adjust`` gives the change to) gets the change too, and it is unmarked."""
    mark = entry.queued
    for unit, cap in window.caps.items() if window.caps else ():
        if entry.seq < cap[2] and subtracted(mark, cap[4]) and entry.seq != cap[3]:
            cap[0] -= (tokens - entry.tokens) if unit else (live - entry.live)
    window.queued.unmark(entry)


def give_way(window: Any, now: float, tokens: int) -> Any:
    """``window.take(now, tokens)`` for a call leaving an inner queue, made room for by ours
    still queued behind it when there is none (not for a pause: their claims free none of
    it): the newest give way, refunded, until it fits. The new entry, or None."""
    taken = window.take(now, tokens)
    queued = window.queued
    while taken is None and queued.entries and window.paused_until <= now:
        window.adjust(now, queued.newest(), 0, live=0)
        taken = window.take(now, tokens)
    return taken


def roomy(window: Any, claims: int, tokens: int) -> bool:
    """True when ``claims`` more requests of ``tokens`` each would fit in ``window`` now
    whatever the time (its logs' counts only fall as entries expire): nothing learned or
    assumed of the server, no pause or cap since, and each quota's sliding log with room for
    them all. RateLimit then leaves the reservations of calls that will wait in an inner queue
    to when they leave it (``held``): they find the room then, and pacing cannot tell."""
    shape = window.shape
    if window.caps or window.paused_until or (shape is not None and (
            shape.kind != "unknown" or shape.assumed or shape.served)):
        return False
    units = tokens if window.charge is None else window.charge.units(tokens)
    for track in window.tracks:
        log = getattr(track, "log", track)  # an auto track's, or the track itself
        if type(log) is not Log or log.used + claims * (units if log.tokens else 1) > log.limit:
            return False
    return True
