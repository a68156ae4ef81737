"""One single flight of a Cache: the call under way for a key and the callers waiting for it.

The first caller of a key runs the call inline, in its own task (a miss costs no task and no
extra loop turn); a Flight is made only when a second caller joins (till then the runner's
record marks the key as under way in ``SingleFlight._flights``). A caller that joins waits on a future of its own, which the first caller
resolves as the call ends (an error reaches every joiner, never cached). A cancelled joiner
only drops its future. When the first caller itself is cancelled (or closed) while joiners
wait, its call is cancelled with it: what the call's frames bound to its task (the provider's
``asyncio.timeout``, an SDK's cancel scope, Timeout's timer) cannot move to another task. The
first joiner still waiting then takes the flight over: it starts the call again in a task of
its own, which every caller still waiting (and any that joins) shares, the last one out
cancelling it. So a joiner always gets an answer, and a key's call is started at most twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .._core.events import CallRecord

__all__ = ["LEAD", "Flight", "start"]

#: Python 3.12+: a task that runs at once until it first waits, in its own task (inner layers
#: and the provider see it as the current task): a take-over then costs no loop iteration to
#: start its call. 3.11 schedules it.
_eager = getattr(asyncio, "eager_task_factory", None)


class _Lead:
    __slots__ = ()

    def __repr__(self) -> str:
        return "LEAD"


#: What a joiner's future is resolved with when the first caller left before the answer: the
#: joiner then starts the call, in a task of its own, for everyone still waiting.
LEAD: Any = _Lead()


def start(loop: asyncio.AbstractEventLoop, fill: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start ``fill`` in a task of its own (eagerly where the loop's asyncio can)."""
    return loop.create_task(fill) if _eager is None else _eager(loop, fill)


class Flight:
    """One call under way for a key, and the futures of the callers that joined it."""

    __slots__ = ("task", "owner", "waiters", "live", "landed", "record", "heir")

    def __init__(self, record: CallRecord) -> None:
        #: The task running the call after a take-over; None while the first caller runs it.
        self.task: asyncio.Task[None] | None = None
        #: The future of the caller whose call the task runs (None: the first caller's, inline).
        self.owner: asyncio.Future[Any] | None = None
        #: Every joiner's future, in arrival order (a cancelled one stays, done).
        self.waiters: list[asyncio.Future[Any]] = []
        #: Joiners not cancelled; after a take-over the last to leave early cancels the task.
        self.live = 0
        #: True once the call ended and resolved the waiters.
        self.landed = False
        #: The record of the call under way (the first caller's, or the owner's after a
        #: take-over): the layers below write what happened at the provider there.
        self.record = record
        #: The waiter that accounts for the provider call when its owner left before the
        #: answer came (see ``CallRecord.inherited``), else None.
        self.heir: asyncio.Future[Any] | None = None

    def join(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A new joiner's future."""
        waiter = loop.create_future()
        self.waiters.append(waiter)
        self.live += 1
        return waiter

    def hand_over(self) -> bool:
        """The call's runner left before the answer: tell the first joiner still waiting to
        take the flight over (its future gets :data:`LEAD`). False if nobody waits."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(LEAD)
                return True
        return False

    def take_over(self, loop: asyncio.AbstractEventLoop, record: CallRecord) -> asyncio.Future[Any]:
        """The joiner told :data:`LEAD` becomes the owner: its call (of ``record``) will run in
        a task for everyone still waiting, and accounts for the provider call. Returns the
        future the owner waits on (the task resolves it, apart from the joiners')."""
        owner = self.owner = loop.create_future()
        self.waiters = [waiter for waiter in self.waiters if not waiter.done()]
        self.record = record
        record.inherited = True
        return owner

    def leave(self, waiter: asyncio.Future[Any]) -> bool:
        """A joiner cancelled before its answer came; True if it was the last one waiting on
        a take-over's task (which nobody wants any more)."""
        waiter.cancel()
        if self.landed:
            return False
        self.live -= 1
        return self.task is not None and not self.live

    def resolved(self) -> list[asyncio.Future[Any]]:
        """The waiters still waiting, as the call ends; names the heir if the owner left."""
        waiting = [waiter for waiter in self.waiters if not waiter.done()]
        if self.owner is not None and self.owner.done() and waiting:
            self.heir = waiting[0]
        return waiting

    def tell(self, waiter: asyncio.Future[Any], record: CallRecord) -> None:
        """A waiter that joined this flight learns what answered it: the models the call's
        attempts were sent with and the Fallback alternate (if one answered); the heir also
        takes the usage and cost the provider call was billed."""
        answered = self.record
        if record is answered:
            return
        record.models, record.fallback = answered.models, answered.fallback
        if waiter is self.heir:
            record.inherited = True
            record.usage, record.cost = answered.usage, answered.cost
            record.provider, record.operation = answered.provider, answered.operation
            record.server = answered.server

    def fail(self, error: BaseException) -> None:
        """Hand every waiting caller ``error`` (a cancellation as a cancellation) and forget
        them: the error's traceback holds the call's frames, which must not reach the waiters
        (one of which holds the error: a cycle only the collector would free)."""
        waiters, self.waiters = self.waiters, []
        if self.owner is not None:
            waiters.append(self.owner)
        cancelled = not isinstance(error, Exception)
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel() if cancelled else waiter.set_exception(error)
