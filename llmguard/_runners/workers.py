"""The worker machinery behind :func:`llmguard.batch_iter`: one Outcome per admitted item.

``concurrency`` long-lived worker tasks pull items from the (sync or async) input one at a time:
there is never a task per item, so a million items run in constant memory. At most
``4 * concurrency`` items are admitted but not yet handed to the consumer (in flight plus
buffered). With ``ordered=True`` that is also the reorder buffer: when one slow item holds the
head, admission pauses once ``4 * concurrency`` items past it were admitted, until it finishes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from .._core.events import CallRecord, records
from .._core.public import public
from .._core.redact import redact
from .reorder import Reorder

__all__ = ["Outcome", "PreviousFailure", "Run"]


@public
@dataclass(frozen=True, slots=True)
class Outcome:
    """How one input item ended: exactly one per admitted item."""

    #: Position of the item in the input.
    index: int
    #: Checkpoint key (``key(item)``, default position + stable hash; ``str(index)`` without checkpoint).
    key: str
    item: Any
    #: The result, or None when the item failed.
    value: Any
    #: The exception (``CancelledError`` for items cancelled at shutdown), or None.
    error: BaseException | None
    #: Attempts made: one per guarded call the item made, plus their retries (1 when the
    #: function is not guarded).
    attempts: int
    #: Seconds from start to end of the item (loop clock).
    latency: float
    #: The :class:`~llmguard.CallRecord` of each guarded call the item made, in order. Kept
    #: only when asked (``keep_records=True``, or an ``llmguard.recording()`` active around the
    #: batch): a record per item is most of a large batch's memory. Empty otherwise, and when
    #: restored from a checkpoint or not guarded.
    calls: tuple[CallRecord, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the item produced a value."""
        return self.error is None


def _attempts(calls: list[CallRecord]) -> int:
    return sum(1 + record.retries for record in calls) or 1


class PreviousFailure(Exception):
    """A failure recorded in the checkpoint by an earlier run (``retry_failed=False``)."""


class Run:
    """State of one batch: the input, the workers, and the outcomes not yet handed out."""

    __slots__ = (
        "fn", "concurrency", "ordered", "key", "store", "retry_failed", "limit", "source",
        "is_async", "lock", "admitted", "emitted", "ready", "space", "wake", "stopping",
        "live", "failure", "ok", "failed", "bar", "workers", "keep",
    )

    def __init__(self, fn, items, concurrency, ordered, key, store, retry_failed, bar,
                 keep: bool = False) -> None:
        self.fn, self.concurrency, self.ordered = fn, concurrency, ordered
        self.key, self.store, self.retry_failed, self.bar = key, store, retry_failed, bar
        self.limit = 4 * concurrency
        self.is_async = isinstance(items, AsyncIterable)
        self.source = aiter(items) if self.is_async else iter(items)
        self.lock = asyncio.Lock()
        self.admitted = self.emitted = self.ok = self.failed = self.live = 0
        self.ready: Any = Reorder() if ordered else deque()
        self.space, self.wake = asyncio.Event(), asyncio.Event()
        self.stopping = False
        self.failure: BaseException | None = None
        #: Worker tasks, started one at a time as items arrive (see ``spawn``).
        self.workers: list[asyncio.Task[None]] = []
        #: Outcomes keep their call records (else the records only count the attempts).
        self.keep = keep

    def spawn(self) -> None:
        """Start one more worker. Workers are started as items come in, never more than there
        are items: a huge ``concurrency`` costs nothing until the input can fill it."""
        self.workers.append(asyncio.get_running_loop().create_task(self.work()))
        self.live += 1

    def cancel_workers(self) -> None:
        for task in self.workers:
            task.cancel()

    async def _next(self) -> tuple[int, Any] | None:
        while self.admitted - self.emitted >= self.limit and not self.stopping:
            self.space.clear()
            await self.space.wait()
        if self.stopping:
            return None
        if self.is_async:
            async with self.lock:
                if self.stopping:
                    return None
                try:
                    item = await anext(self.source)
                except StopAsyncIteration:
                    return None
        else:
            try:
                item = next(self.source)
            except StopIteration:
                return None
        index = self.admitted
        self.admitted += 1
        return index, item

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        fn, store, keep = self.fn, self.store, self.keep
        try:
            while (nxt := await self._next()) is not None:
                index, item = nxt
                if self.live < self.concurrency:  # this worker is busy: another takes the next
                    self.spawn()
                key = str(index) if self.key is None else self.key(index, item)
                if store is not None and (done := self._restore(index, key, item)) is not None:
                    self._deliver(done)
                    continue
                calls: list[CallRecord] = []
                records.set(calls)  # this worker task's context: the item's guarded calls
                start = loop.time()
                value = error = None
                try:
                    value = await fn(item)
                except Exception as exc:
                    error = exc
                except asyncio.CancelledError as exc:
                    if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        self._finish(Outcome(index, key, item, None, exc, _attempts(calls),
                                             loop.time() - start,
                                             tuple(calls) if keep else ()))
                        raise
                    error = exc  # fn's own cancellation (an inner timeout): a failure of this item
                self._finish(Outcome(index, key, item, value, error, _attempts(calls),
                                     loop.time() - start, tuple(calls) if keep else ()))
        except Exception as exc:  # the input iterator or key() raised: stop the batch, report it
            self.failure = self.failure or exc
            self.stop()
        finally:
            self.live -= 1
            self.wake.set()

    def _restore(self, index: int, key: str, item: Any) -> Outcome | None:
        record = self.store.records.get(key)  # type: ignore[union-attr]
        if record is None or (not record["ok"] and self.retry_failed):
            return None
        error = None if record["ok"] else PreviousFailure(f"failed in a previous run: {record['error']}")
        if error is not None:  # once per key: the store skips keys already dead-lettered
            self.store.dead_letter(record)  # type: ignore[union-attr]
        return Outcome(index, key, item, record.get("value"), error, record.get("attempts", 1), 0.0)

    def _finish(self, outcome: Outcome) -> None:
        if self.store is not None and not isinstance(outcome.error, asyncio.CancelledError):
            record: dict[str, Any] = {"key": outcome.key, "index": outcome.index, "ok": outcome.ok,
                                      "attempts": outcome.attempts, "latency": round(outcome.latency, 6)}
            if outcome.ok:
                record["value"] = outcome.value
            else:
                # A failed item is kept so it can be inspected or replayed; its credentials are
                # not (an api_key argument, a URL with user-info, a bearer header in a message).
                record["error"] = redact(f"{type(outcome.error).__name__}: {outcome.error}")
                record["item"] = redact(outcome.item)
            self.store.write(record)
        self._deliver(outcome)

    def _deliver(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.ordered:
            self.ready.put(outcome.index, outcome)
        else:
            self.ready.append(outcome)
        self.wake.set()

    def pop(self) -> Outcome | None:
        """The next outcome to hand out, or None (none ready)."""
        if self.ordered:
            outcome = self.ready.pop()
        else:
            outcome = self.ready.popleft() if self.ready else None
        if outcome is not None:
            self.emitted += 1
            self.space.set()
        return outcome

    def pop_drained(self) -> Outcome | None:
        """After shutdown: the next outcome, skipping indexes that will never finish."""
        outcome = self.pop()
        if outcome is None and self.ordered and self.ready.skip_gap():
            outcome = self.pop()
        return outcome

    def stop(self, _signal: str | None = None) -> None:
        self.stopping = True
        self.space.set()
        self.wake.set()

    def summary(self) -> str:
        return (f"{self.ok + self.failed} items finished ({self.ok} ok, {self.failed} failed); "
                "rerun with the same checkpoint to resume" if self.store else
                f"{self.ok + self.failed} items finished ({self.ok} ok, {self.failed} failed)")
