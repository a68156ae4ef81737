"""Moving a reservation to the moment its call is sent.

A call RateLimit admitted that then waited in an inner queue (ConcurrencyLimit,
AdaptiveConcurrency) reaches the provider only as it leaves that queue, so it is counted from
then (README, "Time budgets"): its reservation is given back and one is taken at that instant,
in the place of an admission made then (a new entry: the log, the buckets, the fixed count and
the header readings see it at its real send, after ours admitted meanwhile). Under ``gather``
that is most calls. :func:`move` does exactly ``window.adjust(now, entry, 0, live=0)`` then
``window.take(now, tokens)`` (tested against them), in one pass over the tracks: the refund and
the room check of each track together; with no room, ours still queued behind it give way
(:func:`.queued.give_way`).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol, runtime_checkable

from . import beyond, changed
from .log import Entry
from .queued import give_way

__all__ = ["MovesNow", "move"]


@runtime_checkable
class MovesNow(Protocol):
    """A backend that moves a reservation to now without suspending (its state is in this
    process): ``move`` does what ``refund(key, ticket)`` then ``take(key, quotas, tokens)``
    do, the new ticket or None (the refund made, nothing taken). ``held.Held`` uses it for a
    call counted again as it leaves an inner queue; a backend without it is refunded and
    reserves anew (Redis: a remote reservation is not moved in place). One that also has
    ``queued(key, ticket, waits)`` is told when the call of ``ticket`` starts waiting in an
    inner queue (``waits``) or was let go at once after all (:mod:`.queued`)."""

    def move(self, key: Hashable, quotas: tuple[Any, ...], ticket: Any, tokens: int) -> Any: ...


def move(window: Any, now: float, entry: Entry, tokens: int) -> Entry | None:
    """Refund ``entry`` (an admission of ``window`` not settled yet) and take ``tokens`` now:
    the new entry, or None (no room now: the refund stands, nothing taken)."""
    shape = window.shape
    if (entry.owner is not (window if window.buckets else None) or not entry.live
            or window.caps or window.paused_until > now
            or (shape is not None and (entry is shape.probe or shape.kind == "bucket"
                                       or shape.kind == "fixed" or shape.assumed))):
        window.adjust(now, entry, 0, live=0)  # what the written-out pass below leaves out
        return give_way(window, now, tokens)
    estimate = tokens
    if window.charge is not None:
        tokens = window.charge.units(tokens)
    if window.readings.groups:  # (``Window.adjust``'s refund, as below)
        window.readings.refund(entry)
    fits = True
    for track in window.pace:  # each track's refund and room check in one pass
        track.adjust(now, entry, 0, 0)
        if fits and not track.fits(now, tokens):
            fits = False
    entry.owner = None
    if entry.queued:  # (as ``Window.adjust``: after the refund gave it back to the readings)
        window.queued.unmark(entry)
    if entry.answered > now:
        entry.answered = now
        changed.answered += 1
    entry.tokens = entry.live = 0
    changed.counted += 1  # (live, as the guard above says)
    if not fits:
        return beyond.probe(window, now, tokens, estimate) or give_way(window, now, estimate)
    return window.add(now, tokens, estimate)
