"""One single flight of a Cache: the fill under way and the callers waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .._core.events import CallRecord

__all__ = ["Flight", "start"]

#: Python 3.12+: a task that runs at once until it first waits, in its own task (inner layers
#: and the provider see it as the current task): a miss then costs no loop iteration to start
#: its fill, and none at all if the fill ends without waiting. 3.11 schedules it.
_eager = getattr(asyncio, "eager_task_factory", None)


def start(loop: asyncio.AbstractEventLoop, fill: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start ``fill`` in a task of its own (eagerly where the loop's asyncio can)."""
    return loop.create_task(fill) if _eager is None else _eager(loop, fill)


class Flight:
    """One fill under way and the futures of the callers waiting for it."""

    __slots__ = ("task", "waiters", "live", "landed", "record", "heir")

    def __init__(self, first: asyncio.Future[Any], record: CallRecord) -> None:
        self.task: asyncio.Task[None] | None = None
        #: Every caller's future, in arrival order (a cancelled one stays, done).
        self.waiters: list[asyncio.Future[Any]] = [first]
        #: Waiters not cancelled; the last to leave early cancels the fill.
        self.live = 1
        #: True once the fill ended and resolved the waiters.
        self.landed = False
        #: The record of the call the fill runs (the first caller's): the layers below write
        #: what happened at the provider there.
        self.record = record
        #: The waiter that accounts for the provider call when the first caller left before
        #: the answer came (see ``CallRecord.inherited``), else None.
        self.heir: asyncio.Future[Any] | None = None

    def resolved(self) -> list[asyncio.Future[Any]]:
        """The waiters still waiting, as the fill ends; names the heir if the first left."""
        waiting = [waiter for waiter in self.waiters if not waiter.done()]
        if waiting and waiting[0] is not self.waiters[0]:
            self.heir = waiting[0]
        return waiting

    def tell(self, waiter: asyncio.Future[Any], record: CallRecord) -> None:
        """A waiter that joined this flight learns what answered it: the models the fill's
        attempts were sent with and the Fallback alternate (if one answered); the heir also
        takes the usage and cost the provider call was billed."""
        answered = self.record
        record.models, record.fallback = answered.models, answered.fallback
        if waiter is self.heir:
            record.inherited = True
            record.usage, record.cost = answered.usage, answered.cost
            record.provider, record.operation = answered.provider, answered.operation
            record.server = answered.server

    def fail(self, error: BaseException) -> None:
        """Hand every waiting caller ``error`` (a cancellation as a cancellation) and forget
        them: the error's traceback holds the fill's frame, which must not reach the waiters
        (one of which holds the error: a cycle only the collector would free)."""
        waiters, self.waiters = self.waiters, []
        cancelled = not isinstance(error, Exception)
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel() if cancelled else waiter.set_exception(error)
