"""honouring_cancel: a cancel that something below swallowed (asyncio.wait_for on Python 3.11,
redis-py under a socket_timeout) is raised, not lost."""

from __future__ import annotations

import asyncio

import pytest

from llmguard._core.cancel import honouring_cancel


async def swallowing() -> str:
    """Like 3.11's wait_for when its awaitable finished as the cancel arrived: the result wins."""
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        return "kept"
    return "slept"


async def test_a_swallowed_cancel_is_lost_by_a_bare_await() -> None:
    task = asyncio.create_task(swallowing())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "kept"  # the hazard this module exists for


async def test_a_swallowed_cancel_is_raised() -> None:
    async def caller() -> str:
        return await honouring_cancel(swallowing())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_a_cancel_the_result_is_returned() -> None:
    assert await honouring_cancel(swallowing()) == "slept"


async def test_a_cancel_before_the_call_is_not_counted_against_it() -> None:
    async def caller() -> str:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # handled: the task goes on
        return await honouring_cancel(swallowing())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "slept"
