"""The order every admission line serves its waiters in: higher priority first, then
round-robin across partitions (tenants, keys), then first come, first served.

One structure for the :class:`~llmguard.ConcurrencyLimiter`'s permits, a
:class:`~llmguard.RateLimit`'s waiting line and a :class:`~llmguard.Router`'s, so a tenant's
``X-Priority: high`` call and its turn mean the same wherever it waits.

A waiter is its future: done means gone (granted, given up, cancelled), skipped when reached.
``priority -> partition -> FIFO``: dicts keep insertion order, so moving a served partition to
the end of its class is the round-robin. A waiter that gives up anywhere leaves in O(1)
(:meth:`FairQueue.discard`, amortised: a FIFO is rebuilt once it is mostly leavers, and goes
with its last live waiter, else one per timed-out tenant would pile up for ever).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

__all__ = ["FairQueue", "Fifo"]


class Fifo(deque):  # type: ignore[type-arg]
    """One (priority, partition)'s futures in arrival order, and how many are live (neither
    taken nor discarded). :meth:`FairQueue.push` returns it: the handle to discard or serve by."""

    __slots__ = ("live", "partition", "priority")

    def __init__(self, priority: int, partition: Hashable) -> None:
        super().__init__()
        self.live = 0
        self.priority, self.partition = priority, partition


class FairQueue:
    """Futures served by priority, then round-robin across partitions, then FIFO (module doc).

    ``push`` returns the waiter's :class:`Fifo`; exactly one of ``pop`` (which takes it),
    ``served(fifo)`` (granted by its owner while it was not necessarily first: it still ends
    its partition's turn) or ``discard(fifo)`` (it gave up) must follow for each push.
    """

    __slots__ = ("_classes", "_sole")

    def __init__(self) -> None:
        self._classes: dict[int, dict[Hashable, Fifo]] = {}
        #: The one FIFO while one (priority, partition) waits, else None: a queue of calls of
        #: one class and tenant (every call under ``gather``) pushes and pops without the
        #: round's look-ups (:meth:`_sole_now` keeps it as FIFOs come and go).
        self._sole: Fifo | None = None

    def _sole_now(self) -> None:
        """The FIFOs changed (one made or dropped): is there one alone now?"""
        classes = self._classes
        partitions = next(iter(classes.values())) if len(classes) == 1 else None
        self._sole = (next(iter(partitions.values()))
                      if partitions is not None and len(partitions) == 1 else None)

    def __bool__(self) -> bool:
        return bool(self._classes)

    def push(self, future: asyncio.Future[Any], priority: int = 0, partition: Hashable = None,
             *, first: bool = False) -> Fifo:
        """Queue ``future`` at the end of its partition (the front with ``first``: a call that
        was admitted once already); a new partition joins the end of its class's round."""
        fifo = self._sole
        if fifo is None or fifo.partition is not partition or fifo.priority != priority:
            partitions = self._classes.get(priority)
            if partitions is None:
                partitions = self._classes[priority] = {}
            fifo = partitions.get(partition)
            if fifo is None:
                fifo = partitions[partition] = Fifo(priority, partition)
                self._sole_now()
        if first:
            fifo.appendleft(future)
        else:
            fifo.append(future)
        fifo.live += 1
        return fifo

    def _front(self) -> Fifo | None:
        """The FIFO whose turn it is, with a waiting future first (amortised O(1) per call,
        plus the number of priority classes)."""
        classes = self._classes
        while classes:
            priority = max(classes)
            partitions = classes[priority]
            partition = next(iter(partitions))
            fifo = partitions[partition]
            while fifo and fifo[0].done():
                fifo.popleft()
            if fifo:
                return fifo
            # Only leavers whose discard is still to come: it finds the FIFO gone.
            del partitions[partition]
            if not partitions:
                del classes[priority]
            self._sole_now()
        return None

    def head(self) -> asyncio.Future[Any] | None:
        """The future to serve next (not taken), or None when nobody waits."""
        fifo = self._front()
        return fifo[0] if fifo is not None else None

    def pop(self) -> tuple[asyncio.Future[Any], Fifo] | None:
        """Take the future to serve next, with its FIFO (``.priority``); None when nobody
        waits. Its partition goes to the end of the round."""
        fifo = self._sole
        if fifo is not None and fifo and not fifo[0].done():  # one FIFO waits: no round
            future = fifo.popleft()
            fifo.live -= 1
            if fifo.live <= 0:  # (``served``: it goes with its last live waiter)
                self._classes.clear()
                self._sole = None
            return future, fifo
        fifo = self._front()
        if fifo is None:
            return None
        future = fifo.popleft()
        self.served(fifo)
        return future, fifo

    def served(self, fifo: Fifo) -> None:
        """A future of ``fifo`` was granted (and is done): its partition's turn is over."""
        fifo.live -= 1
        partitions = self._classes.get(fifo.priority)
        if partitions is None or partitions.get(fifo.partition) is not fifo:
            return  # emptied of live waiters already
        if fifo.live > 0:
            if len(partitions) > 1:  # to the end of the round (alone, it is there already)
                del partitions[fifo.partition]
                partitions[fifo.partition] = fifo
            return
        del partitions[fifo.partition]
        if not partitions:
            del self._classes[fifo.priority]
        self._sole_now()

    def discard(self, fifo: Fifo) -> None:
        """A future of ``fifo`` gave up (it is done, wherever it stands): O(1) amortised."""
        fifo.live -= 1
        partitions = self._classes.get(fifo.priority)
        if partitions is None or partitions.get(fifo.partition) is not fifo:
            return
        if fifo.live <= 0:
            del partitions[fifo.partition]
            if not partitions:
                del self._classes[fifo.priority]
            self._sole_now()
        elif len(fifo) > 2 * fifo.live + 16:  # one rebuild per ~live leavers
            alive = [future for future in fifo if not future.done()]
            fifo.clear()
            fifo.extend(alive)

    def __iter__(self) -> Iterator[asyncio.Future[Any]]:
        """The waiting futures, highest priority first, each class's partitions in turn order
        (each partition's FIFO whole: an approximation of the serving order)."""
        for priority in sorted(self._classes, reverse=True):
            for fifo in list(self._classes[priority].values()):
                yield from (future for future in fifo if not future.done())

    def clear(self) -> None:
        self._classes.clear()
        self._sole = None
