"""Dropping a request nobody wants any more, if it was not sent yet.

A client that hangs up while its request waits for a model slot, or a job cancelled while its
lines wait, should cost the provider nothing: the request is abandoned as long as it has not
reached the provider (``Call.record.sent``). Once sent, it is answered to the end: the provider
has charged it, and the usage is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import llmguard as lg

__all__ = ["Abandoned", "unless_abandoned"]


class Abandoned(Exception):
    """Nobody wants the answer any more (the client left, the job was cancelled) and the
    request had not been sent upstream yet, so it never will be."""


async def unless_abandoned(work: Any, call: lg.Call, abandon: asyncio.Event) -> Any:
    """Await ``work`` (the call through the layers), but once ``abandon`` is set cancel it if
    it has not reached the provider yet (waiting in a queue, for quota): :class:`Abandoned`.
    A call already sent is awaited to its end (the provider charged it; usage is recorded)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not call.record.sent:
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # our own caller was cancelled too
                raise Abandoned("the request was abandoned before it was sent upstream") \
                    from None
        return await task
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
