"""The waiting line of a :class:`RateLimit`: callers waiting for quota room, FIFO per key.

A waiter is a future and nothing else: one driver task per key with waiters (not per waiter)
asks the backend for room for the head of the line, hands the reservation to the head's future,
and otherwise sleeps for the wait the backend named, or less: a refund, a reconciliation or
provider headers may free room earlier (:meth:`WaitingLine.wake`). So memory per waiter is its
future and its place in the line (100k callers queued on one RateLimit cost their own frames
plus about 200 bytes each), and a waiter that gives up leaves in O(1): it leaves the dict of
waiters at once and the arrival-order deque when it reaches the head (a dict alone would not
do: finding its first key after many pops from the front rescans the deleted slots, which made
draining or cancelling a long line in order quadratic).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..._core.errors import AdmissionTimeout

__all__ = ["Held", "WaitingLine"]


class _Queue:
    """One key's waiters (future -> tokens), their arrival order and its driver."""

    __slots__ = ("waiters", "order", "front", "driver", "wake")

    def __init__(self) -> None:
        self.waiters: dict[asyncio.Future[Any], int] = {}
        #: Futures in arrival order; ones that left are dropped when they reach the front.
        self.order: deque[asyncio.Future[Any]] = deque()
        #: Waiters served before ``order``: calls counted again as they leave an inner queue,
        #: holding its slot (behind the line they would hold it while everyone else goes).
        self.front: deque[asyncio.Future[Any]] = deque()
        self.driver: asyncio.Task[None] | None = None
        #: What the driver sleeps on when the head has no room yet (None while it works).
        self.wake: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.waiters)

    def head(self) -> asyncio.Future[Any] | None:
        """The longest-waiting future still in line (amortised O(1))."""
        front, waiters = self.front, self.waiters
        while front and front[0] not in waiters:
            front.popleft()
        if front:
            return front[0]
        order = self.order
        while order and order[0] not in waiters:
            order.popleft()
        return order[0] if order else None

    def left(self) -> None:
        """A waiter left the dict: rebuild the order once it holds mostly leavers, so a head
        that waits long while others give up never holds their futures (amortised O(1))."""
        if len(self.order) + len(self.front) > 2 * len(self.waiters) + 32:
            self.order = deque(f for f in self.order if f in self.waiters)
            self.front = deque(f for f in self.front if f in self.waiters)


def _set(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class WaitingLine:
    """Per-key FIFO lines of waiters over a backend; ``lines`` is empty when nobody waits.
    ``describe()`` names the quotas for the :class:`AdmissionTimeout` message."""

    __slots__ = ("backend", "quotas", "max_wait", "lines", "waiting", "timed_out", "describe")

    def __init__(self, backend: Any, quotas: Any, max_wait: float | None,
                 describe: Callable[[], str]) -> None:
        self.backend = backend
        self.quotas = quotas
        #: Seconds a waiter may wait before AdmissionTimeout (None: no bound).
        self.max_wait = max_wait
        #: key -> its waiters (a key is removed with its last waiter).
        self.lines: dict[Hashable, _Queue] = {}
        #: Callers waiting now, over all keys.
        self.waiting = 0
        #: Waiters that gave up after max_wait, so far.
        self.timed_out = 0
        self.describe = describe

    def wake(self, key: Hashable) -> None:
        """Room may have opened for ``key``: let the head of its line ask again now."""
        queue = self.lines.get(key)
        if queue is not None:
            _set(queue.wake)

    def join(self, key: Hashable, tokens: int, front: bool = False) -> asyncio.Future[Any]:
        """A place at the end of ``key``'s line: a future that gets the reservation of
        ``tokens`` (or :class:`AdmissionTimeout` after ``max_wait`` seconds). Whoever awaits it
        must call :meth:`leave` if it stops waiting (cancelled), which also gives back a
        reservation granted but not taken. ``front``: ahead of everyone who joined without."""
        loop = asyncio.get_running_loop()
        max_wait = self.max_wait
        queue = self.lines.get(key)
        if queue is None:
            queue = self.lines[key] = _Queue()
        future = loop.create_future()
        queue.waiters[future] = tokens
        (queue.front if front else queue.order).append(future)
        self.waiting += 1
        if queue.driver is None:
            queue.driver = loop.create_task(self._drive(key, queue))
        if max_wait is not None:
            handle = loop.call_later(max_wait, self._expire, key, future, max_wait)
            future.add_done_callback(lambda _: handle.cancel())
        return future

    def leave(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        """The waiter of ``future`` stops waiting: out of the line, and if a reservation was
        granted to it already, that goes back (it never reached the provider)."""
        queue = self.lines.get(key)
        if queue is not None and queue.waiters.pop(future, None) is not None:
            self.waiting -= 1
            queue.left()
            future.cancel()
            _set(queue.wake)  # the next waiter may fit where this one did not
        elif future.done() and not future.cancelled() and future.exception() is None:
            self.backend.refund(key, future.result())  # granted, then cancelled: give it back
            self.wake(key)

    def _expire(self, key: Hashable, future: asyncio.Future[Any], max_wait: float) -> None:
        queue = self.lines.get(key)
        if future.done() or queue is None or future not in queue.waiters:
            return
        tokens = queue.waiters.pop(future)
        queue.left()
        self.waiting -= 1
        self.timed_out += 1
        _set(queue.wake)
        future.set_exception(AdmissionTimeout(
            f"waited {max_wait:g} s for rate-limit room ({self.describe()}; estimate {tokens} "
            f"tokens, {len(queue.waiters)} calls waiting with it); raise max_wait or the quota, "
            "or send fewer or smaller calls"))

    async def _drive(self, key: Hashable, queue: _Queue) -> None:
        """Admit the head of ``key``'s line whenever the backend has room for it, in order,
        until the line is empty."""
        loop = asyncio.get_running_loop()
        waiters, backend, quotas = queue.waiters, self.backend, self.quotas
        try:
            while (future := queue.head()) is not None:
                tokens = waiters[future]
                try:
                    wait, ticket = await backend.reserve(key, quotas, tokens)
                except Exception as exc:  # the backend failed (on_error="fail"): the head's error
                    if waiters.pop(future, None) is not None:
                        self.waiting -= 1
                        future.set_exception(exc)
                    continue
                if ticket is not None:
                    if waiters.pop(future, None) is None:  # it left during a remote round trip
                        backend.refund(key, ticket)
                    else:
                        self.waiting -= 1
                        future.set_result(ticket)
                    continue
                if queue.head() is not future:  # the head changed meanwhile
                    continue
                wake = queue.wake = loop.create_future()
                handle = loop.call_later(wait, _set, wake)
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
                queue.order.clear()
                queue.front.clear()
            if self.lines.get(key) is queue:
                del self.lines[key]


class Held:
    """A reservation while its call is inside the layer: ``recount`` is the ``call.on_wait``
    an inner limiter calls when it let the call go after a wait (README, "Time budgets")."""

    __slots__ = ("line", "call", "key", "ticket", "tokens", "outer")

    def __init__(self, line: WaitingLine, call: Any, key: Hashable, ticket: Any, tokens: int,
                 outer: Callable[[], Awaitable[None]] | None) -> None:
        self.line, self.call, self.key, self.ticket = line, call, key, ticket
        self.tokens, self.outer = tokens, outer

    async def recount(self) -> None:
        """The provider sees the call only now: give the reservation back and take one at this
        instant, waiting for room if there is none, so the provider never sees more than the
        quota. It was admitted already and holds an inner slot, so it waits ahead of the line."""
        line, key = self.line, self.key
        backend = line.backend
        backend.refund(key, self.ticket)
        self.ticket = None
        _, ticket = await backend.reserve(key, line.quotas, self.tokens)
        if ticket is None:
            future = line.join(key, self.tokens, front=True)
            try:
                ticket = await future
            except AdmissionTimeout as exc:
                raise self.call.rejected("rate_limit", exc) from None
            except BaseException:
                line.leave(key, future)
                raise
        self.ticket = ticket
        if self.outer is not None:
            await self.outer()
