"""Permit holders: the in-process ``Limiter`` a ``ConcurrencyLimit`` drives (the protocol is in
``permits.py``).

Why not ``asyncio.Semaphore`` or anyio's ``CapacityLimiter``: neither has priorities, per-tenant
fairness, a queue bound or a wait bound, and a semaphore cannot be resized while calls wait.
The limiter hands a released permit directly to the next waiter (no barging: a newcomer never
takes a slot a waiter was promised), which makes FIFO within a class a guarantee, not a tendency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from .._core.check import admission as check_admission, number
from .._core.errors import AdmissionTimeout, QueueFull
from .._core.public import public
from .fair import FairQueue, Fifo
from .permits import ConcurrencyStats, Limiter

__all__ = ["ConcurrencyLimiter", "ConcurrencyStats", "Limiter"]


#: How a bound that accepts None says so.
_NO_BOUND = "; pass None for no bound"


@public
class ConcurrencyLimiter:
    """At most ``limit`` holders at once; waiters served by priority, then round-robin by
    partition, then FIFO.

    ``acquire()`` returns when the caller holds a permit; ``release()`` (synchronous) gives it
    back and hands it to the next waiter. ``limit`` may be changed at any time: growing admits
    waiters at once, shrinking lets holders finish and admits nobody until below the new limit.
    """

    __slots__ = ("_limit", "max_queue", "max_wait", "_in_flight", "_queue", "_waiting",
                 "_waiting_by_priority", "_admitted", "_rejected", "_timed_out", "_granting",
                 "_regrant")

    def __init__(
        self, limit: int, *, max_queue: int | None = None, max_wait: float | None = None
    ) -> None:
        self._limit = number("limit", limit, integer=True)
        #: Most calls allowed to wait; one more is rejected at once with QueueFull.
        self.max_queue = number("max_queue", max_queue, integer=True, optional=True, hint=_NO_BOUND)
        #: Seconds a call may wait before AdmissionTimeout.
        self.max_wait = number("max_wait", max_wait, optional=True, unit=" of seconds",
                               hint=_NO_BOUND)
        self._in_flight = 0
        # The waiters' futures by priority, then round-robin by partition, then FIFO; one
        # that gives up leaves in O(1) (8 bytes a waiter, where an indexed list took ~115).
        self._queue = FairQueue()
        self._waiting = 0
        # Waiters of each priority class but the default's (0: the rest of ``_waiting``, so a
        # queue of default calls keeps no count of its own; ``statistics``).
        self._waiting_by_priority: dict[int, int] = {}
        self._admitted = self._rejected = self._timed_out = 0
        # A finalizer run by the cyclic GC inside _grant (a stream freed there releases its
        # permit) must not grant concurrently with it: it only asks the running loop to go on.
        self._granting = self._regrant = False

    @property
    def limit(self) -> int:
        """The number of permits; settable at run time."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = number("limit", value, integer=True)
        self._grant()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_acquire(self) -> bool:
        """Take a permit now if one is free and nobody waits (True), else take nothing (False).

        Synchronous, no future: the fast path of :class:`~llmguard.ConcurrencyLimit` (optional
        beyond the :class:`Limiter` protocol). A True must be matched by a ``release()``."""
        if self._in_flight < self._limit and not self._waiting:
            self._in_flight += 1
            self._admitted += 1
            return True
        return False

    async def acquire(self, *, priority: int = 0, partition: Hashable = None) -> None:
        """Wait for a permit (higher ``priority`` first). Raises QueueFull or AdmissionTimeout.

        A ``priority`` that is not an int or a ``partition`` that is not hashable raises
        ``TypeError`` for this call only, before anything is taken."""
        check_admission(priority, partition)
        queued = self.enqueue(priority, partition)
        if queued is None:
            return
        future, fifo = queued
        del queued  # not held while waiting (64 bytes a waiter)
        try:
            if self.max_wait is None:
                await future
            else:
                async with asyncio.timeout(self.max_wait):
                    await future
        except BaseException as exc:
            self.withdraw(future, fifo)
            if isinstance(exc, TimeoutError):
                self._timed_out += 1
                raise AdmissionTimeout(
                    f"waited {self.max_wait:g} s for one of {self._limit} concurrency slots "
                    f"({self._in_flight} in flight, {self._waiting} still waiting); raise "
                    "max_wait or limit, or send fewer calls"
                ) from None
            raise

    def enqueue(self, priority: int = 0, partition: Hashable = None,
                ) -> tuple[asyncio.Future[None], Fifo] | None:
        """:meth:`acquire` without its wait (and without ``max_wait``), synchronous: None when
        a permit was taken at once, else the future granting one (awaited by the caller, in its
        own frame: a queued :class:`~llmguard.ConcurrencyLimit` call holds no ``acquire``
        coroutine) and its place in the queue, for :meth:`withdraw`. Raises QueueFull."""
        if self._in_flight < self._limit and not self._waiting:
            self._in_flight += 1  # happy path: no future, no await, no allocation
            self._admitted += 1
            return None
        if self.max_queue is not None and self._waiting >= self.max_queue:
            self._rejected += 1
            raise QueueFull(
                f"{self._waiting} calls already wait for {self._limit} concurrency slots "
                f"(max_queue={self.max_queue}); raise max_queue or limit, or send fewer calls"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fifo = self._queue.push(future, priority, partition)
        self._waiting += 1
        if priority:
            self._waiting_by_priority[priority] = self._waiting_by_priority.get(priority, 0) + 1
        return future, fifo

    def withdraw(self, future: asyncio.Future[None], fifo: Fifo) -> None:
        """A caller of :meth:`enqueue` stopped waiting (cancelled, timed out): afterwards it
        holds nothing; a permit granted meanwhile is passed on, never lost."""
        if future.done() and not future.cancelled():
            self.release()  # granted, then cancelled before it resumed: pass it on
        else:
            future.cancel()
            self._unwait(fifo.priority)
            self._queue.discard(fifo)
            # A caller that came while this one was leaving (its future cancelled, its count
            # still in ``_waiting``) queued instead of taking a free permit: hand it over now.
            if self._waiting and self._in_flight < self._limit:
                self._grant()

    def release(self) -> None:
        """Give a permit back; the next waiter (if any) gets it at once."""
        if self._in_flight <= 0:
            raise RuntimeError("release() called more times than acquire()")
        self._in_flight -= 1
        if self._waiting:
            self._grant()

    def _unwait(self, priority: int) -> None:
        self._waiting -= 1
        if not priority:  # (counted as what the other classes leave)
            return
        left = self._waiting_by_priority[priority] - 1
        if left:
            self._waiting_by_priority[priority] = left
        else:
            del self._waiting_by_priority[priority]

    def _grant(self) -> None:
        if self._granting:  # re-entered from inside the loop below (a GC finalizer released)
            self._regrant = True
            return
        self._granting = True
        queue = self._queue
        try:
            self._regrant = True
            while self._regrant:
                self._regrant = False
                while self._in_flight < self._limit and (taken := queue.pop()) is not None:
                    future, fifo = taken
                    # Count first, then wake: set_result may allocate, run the GC, re-enter.
                    if fifo.priority:
                        self._unwait(fifo.priority)
                    else:  # (``_unwait`` of the default class)
                        self._waiting -= 1
                    self._in_flight += 1
                    self._admitted += 1
                    future.set_result(None)
        finally:
            self._granting = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()

    def statistics(self) -> ConcurrencyStats:
        by_priority = dict(self._waiting_by_priority)
        if default := self._waiting - sum(by_priority.values()):
            by_priority[0] = default
        return ConcurrencyStats(
            self._limit,
            self._in_flight,
            self._waiting,
            dict(sorted(by_priority.items(), reverse=True)),
            self._admitted,
            self._rejected,
            self._timed_out,
        )

    def __repr__(self) -> str:
        return (
            f"<ConcurrencyLimiter limit={self._limit} in_flight={self._in_flight} "
            f"waiting={self._waiting} admitted={self._admitted} rejected={self._rejected} "
            f"timed_out={self._timed_out}>"
        )
