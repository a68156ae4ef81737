"""The overall deadline of :class:`~llmguard.Retry` over an attempt still queued for admission.

``Retry(deadline=...)`` promises (README, "Time budgets") that an attempt still waiting for quota
or a slot when the deadline passes ends with :class:`~llmguard.AdmissionTimeout`, whatever the
layers below: with a :class:`~llmguard.Timeout` inside, Timeout ends it (and tells a queued
attempt from a slow provider); without one, nothing did, and attempts ran on for minutes past
the deadline. :func:`attempt_until_sent` runs one attempt under that promise. Once the attempt
reaches the provider (``call.mark_sent``) the deadline stops applying here: a request the
provider charges for is never cancelled because of time spent in a local queue.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._core.call import Call, loop_of
from .._core.errors import AdmissionTimeout
from .._core.layer import Handler

__all__ = ["attempt_until_sent"]


class _Guard:
    """Cancels the attempt's task at the deadline unless the attempt was sent or is already
    ending (an inner Timeout's own deadline timer, or the caller's cancellation)."""

    __slots__ = ("call", "task", "loop", "handle", "fired")

    def __init__(self, call: Call, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop,
                 end: float) -> None:
        self.call, self.task, self.loop = call, task, loop
        self.fired = False
        self.handle: asyncio.Handle = loop.call_at(end, self._due)

    def _due(self) -> None:
        # One loop iteration later: a Timeout below armed for the same instant has then
        # cancelled the task already (and ends the attempt as AdmissionTimeout itself).
        self.handle = self.loop.call_soon(self._expire)

    def _expire(self) -> None:
        if not self.call.sent and not self.task.cancelling():
            self.fired = True
            self.task.cancel()

    def end(self) -> None:
        self.handle.cancel()


async def attempt_until_sent(call: Call, call_next: Handler, end: float | None) -> Any:
    """``await call_next(call)``, ended with :class:`AdmissionTimeout` if loop time ``end``
    passes before the attempt was sent."""
    if end is None:
        return await call_next(call)
    loop = call.loop or loop_of(call)
    task = asyncio.current_task(loop)
    assert task is not None
    guard = _Guard(call, task, loop, end)
    try:
        return await call_next(call)
    except asyncio.CancelledError:
        if not guard.fired or task.uncancel() > 0:  # the caller's own cancellation (too)
            raise
        raise AdmissionTimeout(
            f"attempt {call.attempt} of {call.name or 'the call'} was still queued for admission "
            "(a rate limit or concurrency slot) when the overall deadline (Retry(deadline=...)) "
            "passed, and never reached the provider; lower the load, raise the limits or the "
            "deadline"
        ) from None
    finally:
        guard.end()
