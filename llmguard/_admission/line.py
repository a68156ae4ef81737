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
from collections.abc import Hashable
from typing import Any

from .._core.errors import AdmissionTimeout

__all__ = ["WaitingLine"]

#: One waiter: a one-item list holding its current wake-up future (replaced on each sleep).
Waiter = list


def _head(line: OrderedDict[int, Waiter]) -> Waiter:
    return next(iter(line.values()))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WaitingLine:
    """Per-key FIFO lines of waiters; ``lines`` is empty when nobody waits."""

    __slots__ = ("lines", "waiting")

    def __init__(self) -> None:
        #: key -> waiters in arrival order, by id (a key is removed with its last waiter).
        self.lines: dict[Hashable, OrderedDict[int, Waiter]] = {}
        #: Callers waiting now, over all keys.
        self.waiting = 0

    def wake(self, key: Hashable) -> None:
        """Room may have opened for ``key``: let the head of its line ask again now."""
        line = self.lines.get(key)
        if line:
            _wake(_head(line)[0])

    async def wait(self, backend: Any, key: Hashable, quotas: Any, tokens: int,
                   wait: float | None, max_wait: float | None, what: str) -> Any:
        """Join ``key``'s line and return a reservation of ``tokens`` once at its head and the
        backend has room (``wait``: what the backend last said, None to ask at the head).

        Raises :class:`AdmissionTimeout` after ``max_wait`` seconds (``what`` describes the
        quotas and the request for the message)."""
        loop = asyncio.get_running_loop()
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = OrderedDict()
        waiter = [loop.create_future()]  # the current wake-up future of this waiter
        line[id(waiter)] = waiter
        self.waiting += 1
        timeout = asyncio.timeout(max_wait)
        try:
            async with timeout:
                while True:
                    if _head(line) is not waiter:
                        await waiter[0]  # set when the waiter ahead of us leaves the line
                        wait = None
                        continue
                    if wait is None:
                        wait, ticket = await backend.reserve(key, quotas, tokens)
                        if ticket is not None:
                            return ticket
                    future = waiter[0] = loop.create_future()
                    handle = loop.call_later(wait, _wake, future)
                    try:
                        await future  # the wait, or earlier if a refund or reconcile frees room
                    finally:
                        handle.cancel()
                    wait = None
        except TimeoutError:
            if not timeout.expired():
                raise
            raise AdmissionTimeout(
                f"waited {max_wait:g} s for rate-limit room ({what}, {len(line) - 1} calls "
                "waiting with it); raise max_wait or the quota, or send fewer or smaller calls"
            ) from None
        finally:
            self.waiting -= 1
            was_head = _head(line) is waiter
            del line[id(waiter)]
            if was_head and line:
                _wake(_head(line)[0])
            if not line:
                del self.lines[key]
