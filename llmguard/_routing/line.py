"""A router's one waiting line, across all its deployments: when no deployment has room for a
call, it waits here, served by priority (higher first), then round-robin across partitions
(tenants), then first come, first served (:mod:`llmguard._admission.fair`).

One driver task (only while someone waits) offers the head of the line to the deployments
(``admit``, the router's reservation across them), or, when the head failed at some
deployments already and none of the others has room, the first waiter that did not (so a
deployment back from an outage is not left idle behind calls that moved away from it), and
otherwise sleeps until the earliest room
any of them named, or less: a call ending, a refund or provider headers wake it
(:meth:`RouterLine.wake`). It never spins: with every deployment full of calls in flight it
sleeps until one ends. A waiter is its future; one that gives up leaves in O(1).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from .._admission.fair import FairQueue, Fifo
from .._core.errors import AdmissionTimeout

__all__ = ["RouterLine"]

#: ``admit(tokens, excluded) -> (grant or None, seconds until room may open)``.
Admit = Callable[[int, frozenset[Any]], Awaitable[tuple[Any, float]]]


class _Waiter:
    __slots__ = ("excluded", "fifo", "future", "tokens")

    def __init__(self, future: asyncio.Future[Any], tokens: int, excluded: frozenset[Any],
                 fifo: Fifo) -> None:
        self.future, self.tokens, self.excluded, self.fifo = future, tokens, excluded, fifo


def _set(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class RouterLine:
    """Waiters in the fair order; ``admit`` reserves, ``release`` gives back a grant whose
    waiter left; ``describe()`` names the deployments for AdmissionTimeout."""

    __slots__ = ("_admit", "_release", "describe", "max_wait", "_queue", "_live", "_driver",
                 "_wake", "timed_out")

    def __init__(self, admit: Admit, release: Callable[[Any], None],
                 describe: Callable[[], str], max_wait: float | None) -> None:
        self._admit, self._release, self.describe = admit, release, describe
        #: Seconds a waiter may wait before AdmissionTimeout (None: no bound).
        self.max_wait = max_wait
        self._queue = FairQueue()
        #: Every waiter still in line (a done future has left or is leaving).
        self._live: dict[asyncio.Future[Any], _Waiter] = {}
        self._driver: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        #: Waiters that gave up after max_wait, so far.
        self.timed_out = 0

    @property
    def waiting(self) -> int:
        """Calls waiting now."""
        return len(self._live)

    def wake(self) -> None:
        """Room may have opened somewhere: let the head ask again now."""
        _set(self._wake)

    def join(self, tokens: int, excluded: frozenset[Any], priority: int,
             partition: Hashable = None, first: bool = False) -> asyncio.Future[Any]:
        """A place in line (at the front of its partition with ``first``: a call that was
        admitted already and moves on): a future that gets a grant (or AdmissionTimeout after
        max_wait). Whoever awaits it calls :meth:`leave` if it stops waiting."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        fifo = self._queue.push(future, priority, partition, first=first)
        self._live[future] = _Waiter(future, tokens, excluded, fifo)
        if self._driver is None:
            self._driver = loop.create_task(self._drive())
        else:
            self.wake()  # a higher priority may now head the line
        if self.max_wait is not None:
            handle = loop.call_later(self.max_wait, self._expire, future, self.max_wait)
            future.add_done_callback(lambda _: handle.cancel())
        return future

    def leave(self, future: asyncio.Future[Any]) -> None:
        """The waiter of ``future`` stops waiting (cancelled): out of line, and a grant it was
        given but did not take goes back."""
        waiter = self._live.pop(future, None)
        if waiter is not None:
            future.cancel()
            self._queue.discard(waiter.fifo)
            self.wake()  # the next waiter may fit where this one did not
        elif future.done() and not future.cancelled() and future.exception() is None:
            self._release(future.result())

    def _head(self) -> _Waiter | None:
        future = self._queue.head()
        return None if future is None else self._live[future]

    def _first_unexcluded(self) -> _Waiter | None:
        """The first waiter in order (about: each partition whole) free to go to any deployment."""
        return next((w for f in self._queue if not (w := self._live[f]).excluded), None)

    def _expire(self, future: asyncio.Future[Any], max_wait: float) -> None:
        waiter = None if future.done() else self._live.pop(future, None)
        if waiter is None:  # gone, or leaving (its leave() takes it out of line)
            return
        self._queue.discard(waiter.fifo)
        self.timed_out += 1
        self.wake()
        future.set_exception(AdmissionTimeout(
            f"waited {max_wait:g} s for room at any deployment ({self.describe()}; estimate "
            f"{waiter.tokens} tokens, {len(self._live)} calls waiting with it); raise max_wait "
            "or add deployments, or send fewer or smaller calls"))

    async def _drive(self) -> None:
        """Give the head of the line the first room any deployment has, in order, until the
        line is empty."""
        loop = asyncio.get_running_loop()
        try:
            while (head := self._head()) is not None:
                # The head first. When it failed at some deployments already, one of those may
                # have room for the first waiter that did not: without asking, such a
                # deployment back from an outage would idle behind calls that moved away.
                asked = (head, self._first_unexcluded() if head.excluded else None)
                grant, wait, served, failed = None, math.inf, None, False
                for waiter in asked:
                    if waiter is None:
                        continue
                    try:
                        grant, later = await self._admit(waiter.tokens, waiter.excluded)
                    except Exception as exc:  # the backend failed (on_error="fail")
                        if not waiter.future.done():
                            del self._live[waiter.future]
                            waiter.future.set_exception(exc)
                            self._queue.discard(waiter.fifo)
                        failed = True
                        break
                    wait = min(wait, later)
                    if grant is not None:
                        served = waiter
                        break
                if served is not None:
                    if served.future.done():  # it left (or is leaving) meanwhile
                        self._release(grant)
                    else:
                        del self._live[served.future]
                        served.future.set_result(grant)
                        self._queue.served(served.fifo)  # its partition's turn is over
                    continue
                if failed or self._head() is not head:  # the line changed while we asked
                    continue
                wake = self._wake = loop.create_future()
                handle = loop.call_later(wait, _set, wake) if math.isfinite(wait) else None
                try:
                    await wake  # the earliest room named, or earlier when woken
                finally:
                    if handle is not None:
                        handle.cancel()
                    self._wake = None
        finally:
            self._driver = None
            for future in list(self._live):  # cancelled with callers waiting (loop closing)
                future.cancel()
            self._live.clear()
            self._queue.clear()
