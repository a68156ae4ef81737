"""A call cancelled while it waits for the connection's background writes to land (``landed``:
a refund given back before the reservation that follows it, ``ratelimit.below``) cancels none
of them, and leaves every other waiter waiting: ``landed`` gathered them, and a gather
cancelled cancels what it gathers (the refunds and settlements in flight, lost; the futures
other waiters shared, so those returned before the writes they waited for had landed).

Against a redis-server of the test's own, stopped (SIGSTOP) while the writes are in flight: no
timing assumption (nothing can land while it is stopped).
"""

import asyncio
import os
import shutil
import signal

import pytest

from llmguard.backends.redis._client import Connection

pytestmark = [
    pytest.mark.looptime(False),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

SET = "redis.call('SET', KEYS[1], ARGV[1]) return 1"


async def turns(count: int = 5) -> None:
    """Let ``count`` loop turns pass (a cancellation's callbacks run)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def cancelled(task: asyncio.Task) -> None:
    """Cancel ``task`` and wait until it ended."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_waiter_cancelled_cancels_no_background_write(server):
    """A refund spawned, in flight while Redis is stopped, and a call waiting for it cancelled:
    the refund still lands once Redis answers (it was cancelled with the waiter: lost)."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 60)
    await connection.call("return 1", [], [], "connecting")  # (the pool's first connection)
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        refund = connection.spawn(connection.write(SET, ["t:refund"], ["1"], "refunding"))
        waiter = asyncio.create_task(connection.landed())
        await turns()
        await cancelled(waiter)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert await refund is True
    assert admin.get("t:refund") == b"1"
    await connection.aclose()


async def test_a_waiter_cancelled_leaves_the_others_waiting(server):
    """Two calls wait for a kept write's first attempt while Redis is stopped; one is
    cancelled: the other still waits until the write landed (it returned at once, before)."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 60)
    await connection.call("return 1", [], [], "connecting")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        connection.keep(SET, ["t:kept"], ["1"], "sharing a reading")
        first = asyncio.create_task(connection.landed())
        second = asyncio.create_task(connection.landed())
        await turns()
        await cancelled(first)
        await turns()
        early = second.done()  # (nothing can have landed: Redis is stopped)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    await second
    assert not early
    assert admin.get("t:kept") == b"1"
    await connection.aclose()


async def test_a_background_writes_error_is_retrieved_by_the_waiter():
    """A background write that raised (a circuit's publish refused under on_error="fail") is
    retrieved by ``landed`` as the gather did: no "Task exception was never retrieved" log."""
    import gc

    loop = asyncio.get_running_loop()
    logged = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context["message"]))
    try:
        connection = Connection("redis://127.0.0.1:1/0", "t", "fail", 0.5)

        async def refused() -> None:
            raise RuntimeError("refused")

        connection.spawn(refused())
        await connection.landed()
        await turns()
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert logged == []
