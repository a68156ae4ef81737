"""The writes a :class:`~._client.Connection` keeps until they land (a verdict, a 429's lesson,
a reading, a pause), and what waits for them. Those kept within a loop turn go in one task, in
order, each retried in place after an outage until it lands: every kept write was two tasks
(its first attempt, and its retries), though nearly every one lands at once, and every answer's
requests and tokens readings made four; now one. ``landed`` waits for their first attempts only
(not an outage): through a future it makes then, none otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["KeptWrites"]

#: A kept write's arguments, or what makes them at each attempt (None: stale).
Args = list[Any] | Callable[[], list[Any] | None]


class KeptWrites:
    """Mixin of :class:`~._client.Connection` (``write``, ``down``, ``retry_interval``,
    ``_tasks``, ``_kept``, ``_trying``, ``_batch`` and ``_closing`` are its)."""

    __slots__ = ()
    _tasks: set[asyncio.Task[Any]]
    _kept: set[asyncio.Task[Any]]
    _trying: dict[asyncio.Task[Any], asyncio.Future[None] | None]
    _batch: tuple[list[Any], asyncio.Task[Any]] | None
    _closing: bool

    async def write(self, script: str, keys: list[str], args: list[Any], what: str) -> bool:
        raise NotImplementedError  # Connection's

    def down(self) -> bool:
        raise NotImplementedError  # Connection's

    def retry_interval(self) -> float:
        raise NotImplementedError  # Connection's

    def keep(self, script: str, keys: list[str], args: Args, what: str) -> asyncio.Task[Any]:
        """Write in the background what every process is to learn from once (a verdict, a 429's
        lesson, a reading, a pause), tried again after each outage (not while Redis is found
        down) until it lands: never lost. No caller waits for it (``landed``: its first attempt;
        ``aclose``: one more). Each script written so is idempotent (a timed-out attempt may have
        run) and returns a value. ``args``: its arguments, or a function making them at each
        attempt (dated by their age: a retry neither shifts nor overrides a newer one; None:
        stale). The task returned ends once it landed, with the others kept in the same turn."""
        if self._batch is None:
            writes: list[Any] = []
            task = self.follow(self._keep(writes))
            self._trying[task] = None  # (until the first attempts ended: ``_tried``)
            self._batch = (writes, task)
        self._batch[0].append((script, keys, args, what))
        return self._batch[1]

    async def _keep(self, writes: list[Any]) -> None:
        """Write ``writes`` (those kept until this task started), in order, each until it lands."""
        if self._batch is not None and self._batch[0] is writes:
            self._batch = None  # (kept from now on: the next task's)
        try:
            writes = await self._attempt(writes)
        finally:
            self._tried(asyncio.current_task())
        while writes and not self._closing:
            await asyncio.sleep(self.retry_interval())
            if not self.down() or self._closing:  # (down: one failure stands for all of them)
                writes = await self._attempt(writes)

    async def _attempt(self, writes: list[Any]) -> list[Any]:
        """Try ``writes`` in order: those that did not land (once one failed, an outage, the
        rest are not tried: one timeout, not one each, before ``landed``; under
        ``on_error="fail"`` too, which never finds Redis ``down``)."""
        left = []
        for script, keys, args, what in writes:
            if not left:
                made = args() if callable(args) else args
                if made is None or await self.write(script, keys, made, what):
                    continue
            left.append((script, keys, args, what))
        return left

    def _tried(self, task: Any) -> None:
        """``task``'s first attempt ended (or the task did): ``landed`` waits no more for it."""
        waiter = self._trying.pop(task, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def follow(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run in the background a write that waits for a kept one first (a 429's settlement
        after its lesson): with the kept writes, so ``landed`` does not wait out an outage."""
        task = asyncio.get_running_loop().create_task(coro)
        self._kept.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._kept.discard(task)
        if self._trying:  # (kept writes cancelled before their first attempts ran)
            self._tried(task)
            if self._batch is not None and self._batch[1] is task:
                self._batch = None

    async def kept(self) -> None:
        """Wait for the writes ``keep`` retries (tests; ``aclose``)."""
        await asyncio.gather(*list(self._kept), return_exceptions=True)

    async def landed(self) -> None:
        """Wait for the writes spawned so far, and each kept one's first attempt (a refund that
        must land before a reservation: ``ratelimit.below``); those queued to ride on the next
        reservation go with it. A waiter cancelled cancels none of them."""
        if self._tasks or self._trying:
            trying = self._trying
            for task, waiter in trying.items():  # a future each, made only when waited for
                if waiter is None:
                    trying[task] = asyncio.get_running_loop().create_future()
            # (wait, not gather: a gather cancelled with its call cancels what it gathers, the
            # refunds in flight and the futures the other waiters share)
            waited = [*self._tasks, *trying.values()]
            await asyncio.wait(waited)
            for ended in waited:  # their errors retrieved, as the gather did (no "never
                if not ended.cancelled():  # retrieved" log for a publish refused)
                    ended.exception()

