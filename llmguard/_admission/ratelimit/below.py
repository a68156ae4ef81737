"""Ours queued below over a backend that cannot move a reservation in one step (Redis): a call
that leaves an inner queue with no room takes the room of ours still queued behind it.

In memory a window marks its entries queued below and makes way for a call leaving the queue
from theirs (:mod:`.queued`). Over Redis the reservation is refunded and taken anew as the call
leaves the queue (:meth:`.held.Held.recount`), and with no room it waited ahead of the line
holding its slot while ours queued behind it held the room: each window RateLimit admits a
quota of calls the slots cannot send in it, so a call still queued at the boundary found the
new window full of their claims (RateLimit(rps=3) over ConcurrencyLimit(1), calls of 0.7 s:
the slot idle 2.2 s of 12.8, none in memory). So this process keeps its own reservations queued
below (``Call.queueing``, per key, oldest first), and a call leaving the queue without room
refunds the newest of them until it fits (:func:`give_way`): each is counted again as its own
call leaves the queue. Other processes' are not known here: theirs keep their room.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

__all__ = ["Below", "give_way"]


class Below:
    """Per key, the :class:`.held.Held` of this process's calls queued below now, oldest
    first (weakly: a call that ends while queued leaves with its reservation)."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: dict[Hashable, weakref.WeakKeyDictionary[Any, None]] = {}

    def mark(self, key: Hashable, held: Any, waits: bool) -> None:
        """``held``'s call waits in an inner queue from now (``waits``), or no longer."""
        below = self.keys.get(key)
        if waits:
            if below is None:
                below = self.keys[key] = weakref.WeakKeyDictionary()
            below[held] = None
        elif below is not None:
            below.pop(held, None)
            if not below:
                del self.keys[key]


async def give_way(line: Any, key: Hashable, tokens: int) -> Any:
    """A reservation of ``tokens`` for a call that left an inner queue and found no room: the
    newest of ours still queued below give theirs back (their calls are counted again as they
    leave the queue), one at a time until it fits, not for a pause (their claims free none of
    it). The ticket, or None."""
    below, backend = line.below.keys.get(key), line.backend
    while below:
        if backend.headroom(key, line.quotas)[2] > 0.0:
            return None
        newest = next(reversed(list(below)))
        del below[newest]
        gone, newest.ticket = newest.ticket, None
        if gone is None:
            continue
        backend.refund(key, gone)
        inner = getattr(backend, "inner", backend)  # (``SplitBackend``'s)
        landed = getattr(getattr(inner, "connection", None), "landed", None)
        if landed is not None:  # Redis: its refund written in the background first
            await landed()
        _, ticket = await backend.reserve(key, line.quotas, tokens)
        if ticket is not None:
            return ticket
    return None
