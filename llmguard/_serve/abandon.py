"""Dropping a request nobody wants any more, if it was not sent yet.

A client that hangs up while its request waits for a model slot, or a job cancelled while its
lines wait, should cost the provider nothing: the request is abandoned as long as it has not
reached the provider (``Call.record.sent``). Once sent, it is answered to the end: the provider
has charged it, and the usage is recorded.

An :class:`Abandon` is bound to the task running the call (``Gateway.call(abandon=...)``);
:meth:`Abandon.fire` cancels that task if the call is unsent, and the gateway turns that
cancellation into :class:`Abandoned`. No task or wait is added to a call that is never
abandoned (the gateway's per-request budget is a fraction of a millisecond).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Abandon", "Abandoned"]


class Abandoned(Exception):
    """Nobody wants the answer any more (the client left, the job was cancelled) and the
    request had not been sent upstream yet, so it never will be."""


class Abandon:
    """The signal that a call's answer is no longer wanted (see the module doc)."""

    __slots__ = ("fired", "_task", "_call", "_cancelled")

    def __init__(self) -> None:
        #: True once :meth:`fire` was called.
        self.fired = False
        self._task: asyncio.Task[Any] | None = None
        self._call: Any = None
        self._cancelled = False

    def fire(self) -> None:
        """Nobody wants the answer: cancel the bound call if it was not sent yet."""
        self.fired = True
        if self._task is not None and not self._cancelled and not self._call.record.sent:
            self._cancelled = True
            self._task.cancel("abandoned")

    def bind(self, call: Any) -> None:
        """The current task now runs ``call`` (raises :class:`Abandoned` if already fired)."""
        if self.fired:
            raise Abandoned("the request was abandoned before it was sent upstream")
        self._task, self._call = asyncio.current_task(), call

    def unbind(self, error: BaseException | None) -> None:
        """The call ended (with ``error``); raises :class:`Abandoned` in place of the
        cancellation :meth:`fire` caused."""
        self._task = self._call = None
        if self._cancelled and isinstance(error, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.uncancel() == 0:  # nobody else cancelled us
                raise Abandoned("the request was abandoned before it was sent upstream") \
                    from None
