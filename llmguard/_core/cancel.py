"""Awaiting something that may swallow this task's cancellation.

On Python 3.11, ``asyncio.wait_for`` returns its awaitable's result when a cancel arrives just
as the awaitable finishes, and the cancel is lost (CPython gh-86296, fixed in 3.12). redis-py
runs every command under ``wait_for`` when its client has a ``socket_timeout``, so a worker loop
or an SSE reader cancelled during a Redis round trip could run on after shutdown asked it to
stop. A task's ``cancelling()`` count still shows the request; :func:`honouring_cancel` reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["honouring_cancel"]

T = TypeVar("T")


async def honouring_cancel(awaitable: Awaitable[T]) -> T:
    """``await awaitable``; raise :class:`asyncio.CancelledError` if this task was cancelled
    meanwhile, even when something below kept the result instead of raising."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError
    return result
