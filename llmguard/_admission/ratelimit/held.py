"""A reservation while its call is inside a :class:`~llmguard.RateLimit`, and its recount: the
attempt's ``on_wait`` hook an inner limiter (ConcurrencyLimit, AdaptiveConcurrency) runs when it
lets the call go after a wait. The provider sees the call only then, so it is counted from then
(README, "Time budgets"): the reservation moves to that instant (:mod:`.move`), waiting for room
ahead of the line if there is none.

A call that arrives while ours already wait in the inner queue (``WaitingLine.waiting_below``) will wait
there too: while the quotas surely hold all of those and it (:func:`.queued.roomy`), RateLimit
reserves nothing up front (``ticket`` None, the attempt's ``deferred``: :func:`defer`), and the
reservation is taken only as the call leaves that queue, as a moved one would be, or at once
if the inner limiter lets it go without a wait. One reservation, not one taken, marked queued,
refunded and taken again (under ``gather``, nearly every call). Once they might not (a quota
nearly spent, anything learned of the server), those deferred reserve at once, oldest first,
and are marked queued, as if admitted then: every call counts them, as before."""

from __future__ import annotations

from collections.abc import Awaitable, Hashable
from typing import Any

from ..._core import clock
from ..._core.errors import AdmissionTimeout
from .below import give_way
from .line import WaitingLine
from .log import Entry

__all__ = ["Held", "defer"]


def defer(line: WaitingLine, key: Hashable, tokens: int) -> bool:
    """True when a call of ``tokens`` under ``key`` goes below unreserved (ours wait in the
    limiter below, which takes ``Attempt.deferred``, and the quotas surely hold them all and
    it); else those already deferred reserve now, oldest first, marked queued below."""
    if line.roomy is not None and line.roomy(key, line.waiting_below + 1, tokens):
        return True
    deferred, take = line.deferred, line.take
    while deferred and take is not None:
        held = next(iter(deferred))
        ticket = take(held.key, line.quotas, held.tokens)
        if ticket is None:  # no room: it reserves as it leaves the queue, waiting if need be
            break
        del deferred[held]
        held.call.current.deferred = None
        held.ticket, held.at = ticket, ticket.time if type(ticket) is Entry else clock.now()
        if line.queued is not None and type(ticket) is Entry and held.waits_below:
            line.queued(held.key, ticket, True)
            line.wake_front(held.key)  # (as ``queued``: one waiting ahead may take its room)
    return False


class Held:
    """The reservation (``ticket``) of ``tokens`` for ``call`` under ``key``, taken at loop
    time ``at`` (its answer's headers sample the send latency from it). Calling it is the
    attempt's ``on_wait`` hook (an object, not a closure: no cells made a call)."""

    __slots__ = ("line", "call", "key", "ticket", "tokens", "at", "waits_below", "__weakref__")

    def __init__(self, line: WaitingLine, call: Any, key: Hashable, ticket: Any,
                 tokens: int, at: float) -> None:
        self.line, self.call, self.key, self.ticket = line, call, key, ticket
        self.tokens = tokens
        self.at = at
        #: True while the call waits in an inner queue (counted in ``line.waiting_below``).
        self.waits_below = False
        if ticket is None:  # deferred (``defer``): the limiter below reserves it as it goes
            line.deferred[self] = None
            call.current.deferred = self

    def __call__(self) -> Awaitable[None] | None:
        """Count the call again now: moved at once in memory when there is room (None: nothing
        to await, no coroutine made), else what waits for it (:meth:`recount`)."""
        line = self.line
        if self.waits_below:
            self.waits_below = False
            line.waiting_below -= 1
        if self.ticket is None:  # deferred: reserved now, as the call leaves (or skips) the queue
            self.call.current.deferred = None
            line.deferred.pop(self, None)
            take = line.take
            if take is None:
                return self.recount()
            ticket = take(self.key, line.quotas, self.tokens)
            if ticket is None:
                return self._wait()
            self.ticket, self.at = ticket, ticket.time if type(ticket) is Entry else clock.now()
            return None
        move = line.move
        if move is None:
            return self.recount()
        ticket, self.ticket = move(self.key, line.quotas, self.ticket, self.tokens), None
        if ticket is None:
            return self._wait()
        self.ticket = ticket  # (an in-memory entry holds the time read for it: now)
        self.at = ticket.time if type(ticket) is Entry else clock.now()
        return None

    def queued(self, waits: bool) -> bool:
        """An inner limiter makes the call wait from now (``waits``; False: it let the call
        go at once after all): an in-memory reservation is marked queued below until it moves
        or is refunded, its headers' readings then not counting it at the server
        (:mod:`.queued`; ``Call.queueing``); a remote one (Redis) is listed until it leaves
        the queue, to give way (:mod:`.below`). True when let go with its reservation given
        way meanwhile: to be counted again."""
        line, ticket = self.line, self.ticket
        if waits != self.waits_below:
            self.waits_below = waits
            line.waiting_below += 1 if waits else -1
        if ticket is None:  # deferred (nothing reserved yet): to be taken as it goes
            return not waits
        if line.queued is not None and type(ticket) is Entry:
            line.queued(self.key, ticket, waits)
            if waits:  # one that left the queue before may be waiting for room it holds
                line.wake_front(self.key)
            return not waits and not ticket.live
        if line.below is not None:
            line.below.mark(self.key, self, waits)
            return not waits and ticket is None
        return False

    def failed(self) -> None:
        """The call failed (in the inner queue, or before its deferred reservation)."""
        if self.waits_below:
            self.waits_below = False
            self.line.waiting_below -= 1
        self.call.current.deferred = None
        self.line.deferred.pop(self, None)

    async def recount(self) -> None:
        """The provider sees the call only now: give the reservation back and take one at this
        instant, waiting for room if there is none, so the provider never sees more than the
        quota. It was admitted already and holds an inner slot, so it waits ahead of the line."""
        line, key = self.line, self.key
        if line.below is not None:
            line.below.mark(key, self, False)
        if self.ticket is not None:  # (None: deferred, or it gave way while queued: .below)
            line.backend.refund(key, self.ticket)
        self.ticket = None
        take = line.take  # in memory: ``reserve`` without its coroutine (it never suspends)
        if take is not None:
            ticket = take(key, line.quotas, self.tokens)
        else:
            _, ticket = await line.backend.reserve(key, line.quotas, self.tokens)
            if ticket is None and line.below is not None:
                ticket = await give_way(line, key, self.tokens)
        if ticket is None:
            await self._wait()
        else:
            self._sent(ticket)

    async def _wait(self) -> None:
        """Wait ahead of the line for the reservation (none held now)."""
        line, key = self.line, self.key
        future = line.join(key, self.tokens, front=True)
        # The reservation given back may be the room the head of the line waits for: the
        # driver slept for a wait reckoned before it (a 32 s stall after a 429: the room of 31
        # calls given back as they left ConcurrencyLimit's queue, nobody woken until a timeout).
        line.wake(key)
        try:
            ticket = await future
        except AdmissionTimeout as exc:
            raise self.call.rejected("rate_limit", exc) from None
        except BaseException:
            line.leave(key, future)
            raise
        self._sent(ticket)

    def _sent(self, ticket: Any) -> None:
        """The reservation taken anew as the call is sent now."""
        self.ticket, self.at = ticket, clock.now()
