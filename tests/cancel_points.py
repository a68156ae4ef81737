"""Cancel a task at each of its await points, found by counting suspensions instead of timing
them, so a property test covers every point of a real-I/O path (Redis round trips) whatever the
machine's speed or load."""

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


class CancelAt:
    """Await ``coro`` in the current task, calling ``Task.cancel()`` on that task (as any caller
    or timeout would) just as ``coro`` suspends for the ``n``-th time (0-based): the future it
    waits on is cancelled and the CancelledError rises from that await point.

    ``reached`` says whether point ``n`` was reached (False: ``coro`` finished before it, so
    every point has been covered once ``n`` passes the last)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], n: int) -> None:
        self.coro, self.n, self.suspensions = coro, n, 0

    @property
    def reached(self) -> bool:
        return self.suspensions > self.n

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = inner.send(value) if error is None else inner.throw(error)
            except StopIteration as stop:
                return stop.value
            if self.suspensions == self.n:
                # Inside the running task: Task.__step cancels the future just yielded (or
                # raises at the next step for a bare yield), exactly as a cancel() from outside
                # while the task waits there.
                asyncio.current_task().cancel()
            self.suspensions += 1
            value, error = None, None
            try:
                value = yield yielded
            except BaseException as exc:  # CancelledError (ours or another's), thrown back in
                error = exc


def start_cancelled_at(n: int, make: Any) -> tuple[CancelAt, asyncio.Task[Any]]:
    """Start ``make()`` (a coroutine) in a task of its own, cancelled at its ``n``-th
    suspension: ``(point, task)``."""
    point = CancelAt(make(), n)

    async def run() -> Any:
        return await point

    return point, asyncio.get_running_loop().create_task(run())


async def outcome(task: asyncio.Task[Any]) -> Any:
    """The task's result, or the exception it ended with (CancelledError when cancelled)."""
    try:
        return await task
    except BaseException as exc:  # noqa: BLE001 - the outcome under test
        if not task.done():  # the test itself was cancelled
            raise
        return exc


async def run_cancelled_at(n: int, make: Any) -> tuple[CancelAt, Any]:
    """Run ``make()`` cancelled at its ``n``-th suspension: ``(point, outcome)``."""
    point, task = start_cancelled_at(n, make)
    return point, await outcome(task)
