"""The waiting line of a :class:`RateLimit`: callers waiting for quota room, per key, served
by priority, then round-robin across partitions (tenants), then first come (:mod:`..fair`).

A waiter is a future and nothing else: one driver task per key with waiters (not per waiter)
asks the backend for room for the head of the line, hands the reservation to the head's future,
and otherwise sleeps for the wait the backend named, or less: a refund, a reconciliation,
provider headers or a new head (a higher priority joined) may free room earlier
(:meth:`WaitingLine.wake`). So memory per waiter is its future and its place in the line, and a
waiter that gives up leaves in O(1).

Head of line: the head is served before anyone behind it, even a smaller call that would fit
now. So a 6,000-token reservation is never overtaken for ever by a stream of 50-token ones
(aiolimiter's heap does that); it waits only for the calls ahead of it in the order above:
higher priorities (which are served first by design), and the turns of other partitions of its
own priority, one call each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from ..._core.check import admission as check_admission
from ..._core.errors import AdmissionTimeout
from ..fair import FairQueue, Fifo
from .below import Below
from .move import MovesNow
from .window import SLACK

__all__ = ["WaitingLine"]


class _Queue:
    """One key's waiters (future -> (tokens, its Fifo)), their order and its driver."""

    __slots__ = ("waiters", "fair", "front", "driver", "wake")

    def __init__(self) -> None:
        #: Every waiter still in line; its Fifo is None at the ``front``.
        self.waiters: dict[asyncio.Future[Any], tuple[int, Fifo | None]] = {}
        #: Priority, then round-robin across partitions, then arrival.
        self.fair = FairQueue()
        #: Waiters served before ``fair``: calls counted again as they leave an inner queue,
        #: holding its slot (behind the line they would hold it while everyone else goes).
        self.front: deque[asyncio.Future[Any]] = deque()
        self.driver: asyncio.Task[None] | None = None
        #: What the driver sleeps on when the head has no room yet (None while it works).
        self.wake: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.waiters)

    def head(self) -> asyncio.Future[Any] | None:
        """The waiter to serve next (amortised O(1)); a done future has left or is leaving."""
        front = self.front
        while front and front[0].done():
            front.popleft()
        return front[0] if front else self.fair.head()

    def gone(self, fifo: Fifo | None) -> None:
        """A waiter left the line (its future is done) without a reservation."""
        if fifo is not None:
            self.fair.discard(fifo)
        elif len(self.front) > 2 * len(self.waiters) + 32:  # amortised O(1)
            self.front = deque(f for f in self.front if not f.done())


def _set(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class WaitingLine:
    """Per-key fair lines of waiters over a backend; ``lines`` is empty when nobody waits.
    ``describe()`` names the quotas for the :class:`AdmissionTimeout` message."""

    __slots__ = ("backend", "quotas", "max_wait", "lines", "waiting", "timed_out", "describe",
                 "take", "move", "queued", "make_way", "below", "waiting_below", "roomy", "deferred")

    def __init__(self, backend: Any, quotas: Any, max_wait: float | None,
                 describe: Callable[[], str], take: Callable[..., Any] | None = None) -> None:
        self.backend = backend
        #: The backend's synchronous admission (``TakesNow.take``), or None: a recount takes
        #: with it instead of awaiting ``reserve`` (the same answer, no coroutine).
        self.take = take
        #: The backend's ``move`` (:class:`.move.MovesNow`), or None: a recount (``held``) then
        #: refunds and takes anew.
        self.move = backend.move if isinstance(backend, MovesNow) else None
        #: Its ``queued`` (optional on a MovesNow backend: :mod:`.queued`), or None.
        queued = getattr(backend, "queued", None) if self.move is not None else None
        self.queued = queued if callable(queued) else None
        #: Its ``make_way`` (likewise), or None: a call waiting ahead of the line that left an
        #: inner queue takes the room of ours queued behind it (:func:`.queued.give_way`).
        self.make_way = getattr(backend, "make_way", None) if self.queued is not None else None
        #: Without ``move`` (Redis): this process's reservations queued below, to give way
        #: to a call leaving that queue without room (:mod:`.below`); else None.
        self.below = Below() if self.move is None and take is None else None
        self.quotas = quotas
        #: Seconds a waiter may wait before AdmissionTimeout (None: no bound).
        self.max_wait = max_wait
        #: key -> its waiters (a key is removed with its last waiter).
        self.lines: dict[Hashable, _Queue] = {}
        #: Callers waiting now, over all keys.
        self.waiting = 0
        #: Waiters that gave up after max_wait, so far.
        self.timed_out = 0
        #: Calls of ours waiting in an inner queue now (``Held.queued``): while there are,
        #: the next call waits there too, and reserves only as it leaves (``Held``).
        self.waiting_below = 0
        #: Its ``roomy`` (likewise; :func:`.queued.roomy`), or None: every call reserves.
        self.roomy = getattr(backend, "roomy", None) if self.queued is not None else None
        #: The ``Held`` of calls gone below unreserved, oldest first (``held.defer``).
        self.deferred: dict[Any, None] = {}
        self.describe = describe

    def wake(self, key: Hashable) -> None:
        """Room may have opened for ``key``: let the head of its line ask again now."""
        queue = self.lines.get(key)
        if queue is not None:
            _set(queue.wake)

    def wake_front(self, key: Hashable) -> None:
        """One of ours was queued below: a call waiting ahead of ``key``'s line (it left that
        queue before) may take its room now (``make_way``)."""
        queue = self.lines.get(key)
        if queue is not None and queue.front:
            _set(queue.wake)

    def join(self, key: Hashable, tokens: int, priority: int = 0, partition: Hashable = None,
             front: bool = False) -> asyncio.Future[Any]:
        """A place in ``key``'s line, by ``priority`` then in ``partition``'s turn: a future
        that gets the reservation of ``tokens`` (or :class:`AdmissionTimeout` after
        ``max_wait`` seconds). Whoever awaits it must call :meth:`leave` if it stops waiting
        (cancelled), which also gives back a reservation granted but not taken. ``front``:
        ahead of everyone who joined without. A ``priority`` that is not an int or a
        ``partition`` that is not hashable raises ``TypeError``, nothing joined."""
        check_admission(priority, partition, " (in RateLimit)")
        loop = asyncio.get_running_loop()
        max_wait = self.max_wait
        queue = self.lines.get(key)
        if queue is None:
            queue = self.lines[key] = _Queue()
        future = loop.create_future()
        fifo = None
        if front:
            queue.front.append(future)
        else:
            fifo = queue.fair.push(future, priority, partition)
        queue.waiters[future] = (tokens, fifo)
        self.waiting += 1
        if queue.driver is None:
            queue.driver = loop.create_task(self._drive(key, queue))
        elif queue.head() is future:  # it goes ahead of the head the driver waits for
            _set(queue.wake)
        if max_wait is not None:
            handle = loop.call_later(max_wait, self._expire, key, future, max_wait)
            future.add_done_callback(lambda _: handle.cancel())
        return future

    def leave(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        """The waiter of ``future`` stops waiting: out of the line, and if a reservation was
        granted to it already, that goes back (it never reached the provider)."""
        queue = self.lines.get(key)
        entry = None if queue is None else queue.waiters.pop(future, None)
        if queue is not None and entry is not None:
            self.waiting -= 1
            future.cancel()
            queue.gone(entry[1])
            _set(queue.wake)  # the next waiter may fit where this one did not
        elif future.done() and not future.cancelled() and future.exception() is None:
            self.backend.refund(key, future.result())  # granted, then cancelled: give it back
            self.wake(key)

    def _expire(self, key: Hashable, future: asyncio.Future[Any], max_wait: float) -> None:
        queue = self.lines.get(key)
        if future.done() or queue is None or future not in queue.waiters:
            return
        tokens, fifo = queue.waiters.pop(future)
        self.waiting -= 1
        self.timed_out += 1
        _set(queue.wake)
        future.set_exception(AdmissionTimeout(
            f"waited {max_wait:g} s for rate-limit room ({self.describe()}; estimate {tokens} "
            f"tokens, {len(queue.waiters)} calls waiting with it); raise max_wait or the quota, "
            "or send fewer or smaller calls"))
        queue.gone(fifo)

    async def _drive(self, key: Hashable, queue: _Queue) -> None:
        """Admit the head of ``key``'s line whenever the backend has room for it, in order,
        until the line is empty."""
        loop = asyncio.get_running_loop()
        waiters, backend = queue.waiters, self.backend
        try:
            while (future := queue.head()) is not None:
                tokens = waiters[future][0]
                try:
                    wait, ticket = await backend.reserve(key, self.quotas, tokens)
                    if ticket is None and self.make_way is not None \
                            and waiters[future][1] is None:  # ahead of the line: it left a queue
                        ticket = self.make_way(key, self.quotas, tokens)
                except Exception as exc:  # the backend failed (on_error="fail"): the head's error
                    if not future.done():
                        self.waiting -= 1
                        future.set_exception(exc)
                        queue.gone(waiters.pop(future)[1])
                    continue
                if ticket is not None:
                    if future.done():  # it left (or is leaving) during a remote round trip
                        backend.refund(key, ticket)
                    else:
                        self.waiting -= 1
                        future.set_result(ticket)
                        fifo = waiters.pop(future)[1]
                        if fifo is not None:
                            queue.fair.served(fifo)  # its partition's turn is over
                    continue
                if queue.head() is not future:  # the head changed meanwhile
                    continue
                wake = queue.wake = loop.create_future()
                # No room with a wait of 0.0 (a backend's rounding: a server clock in ms, float
                # window arithmetic) would re-check at the same clock reading for ever: a busy
                # loop in real time, no progress at all in virtual time. Wait at least SLACK.
                handle = loop.call_later(max(wait, SLACK), _set, wake)
                try:
                    await wake  # the wait, or earlier if a refund or reconcile frees room
                finally:
                    handle.cancel()
                    queue.wake = None
        finally:
            queue.driver = None
            if waiters:  # cancelled with callers still waiting (the loop is closing)
                for future in list(waiters):
                    future.cancel()
                self.waiting -= len(waiters)
                waiters.clear()
                queue.front.clear()
                queue.fair.clear()
            if self.lines.get(key) is queue:
                del self.lines[key]

