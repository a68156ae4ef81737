"""The waiting line of a :class:`RateLimit`: callers waiting for quota room, FIFO per key.

Only the head of a key's line asks the backend for room; the others wait for the waiter ahead to
leave. The head sleeps for the wait the backend named, or less: a refund, a reconciliation or
provider headers may free room earlier (:meth:`WaitingLine.wake`). Lines are dicts keyed by the
waiter's id, so a waiter that gives up leaves in O(1) (a deque's ``remove()`` made cancelling
10k waiters newest-first take seconds).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from typing import Any

from .._core.errors import AdmissionTimeout

__all__ = ["WaitingLine"]

#: One waiter: a one-item list holding its current wake-up future (replaced on each sleep).
Waiter = list

#: The timeout of a line without max_wait: stateless, so one serves every waiter (no object per
#: waiter for a bound that never fires).
_NO_TIMEOUT = nullcontext()


def _head(line: OrderedDict[int, Waiter]) -> Waiter:
    return next(iter(line.values()))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WaitingLine:
    """Per-key FIFO lines of waiters; ``lines`` is empty when nobody waits. ``describe()`` names
    the quotas for the :class:`AdmissionTimeout` message."""

    __slots__ = ("lines", "waiting", "timed_out", "describe")

    def __init__(self, describe: Callable[[], str]) -> None:
        #: key -> waiters in arrival order, by id (a key is removed with its last waiter).
        self.lines: dict[Hashable, OrderedDict[int, Waiter]] = {}
        #: Callers waiting now, over all keys.
        self.waiting = 0
        #: Waiters that gave up after max_wait, so far.
        self.timed_out = 0
        self.describe = describe

    def wake(self, key: Hashable) -> None:
        """Room may have opened for ``key``: let the head of its line ask again now."""
        line = self.lines.get(key)
        if line:
            _wake(_head(line)[0])

    async def wait(self, backend: Any, key: Hashable, quotas: Any, tokens: int,
                   max_wait: float | None, call: Any = None) -> Any:
        """Join ``key``'s line and return a reservation of ``tokens`` once at its head and the
        backend has room. Raises :class:`AdmissionTimeout` after ``max_wait`` seconds.

        With ``call``, the wait is then recorded (``await call.waited(...)``, after leaving the
        line: an outer rate limit may wait again there), and the reservation given back if that
        raises. One coroutine per waiter, whatever it waits for: memory per waiter is a frame."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = OrderedDict()
        waiter = [loop.create_future()]  # the current wake-up future of this waiter
        line[id(waiter)] = waiter
        self.waiting += 1
        timeout = _NO_TIMEOUT if max_wait is None else asyncio.timeout(max_wait)
        try:
            async with timeout:
                while True:
                    if _head(line) is not waiter:
                        await waiter[0]  # set when the waiter ahead of us leaves the line
                        continue
                    wait, ticket = await backend.reserve(key, quotas, tokens)
                    if ticket is not None:
                        break
                    future = waiter[0] = loop.create_future()
                    handle = loop.call_later(wait, _wake, future)
                    try:
                        await future  # the wait, or earlier if a refund or reconcile frees room
                    finally:
                        handle.cancel()
        except TimeoutError:
            if timeout is _NO_TIMEOUT or not timeout.expired():
                raise
            self.timed_out += 1
            raise AdmissionTimeout(
                f"waited {max_wait:g} s for rate-limit room ({self.describe()}; estimate "
                f"{tokens} tokens, {len(line) - 1} calls waiting with it); raise max_wait or "
                "the quota, or send fewer or smaller calls"
            ) from None
        finally:
            self.waiting -= 1
            was_head = _head(line) is waiter
            del line[id(waiter)]
            if was_head and line:
                _wake(_head(line)[0])
            if not line:
                del self.lines[key]
        if call is not None:
            try:
                await call.waited(loop.time() - started, "rate_limit")
            except BaseException:
                backend.refund(key, ticket)
                raise
        return ticket
