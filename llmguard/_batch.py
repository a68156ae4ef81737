"""The batch runner: millions of items through an async function in bounded memory, none lost.

A fixed set of ``concurrency`` workers pulls items from the (sync or async) input as they free up,
so no task is created per item up front and memory does not grow with the input. A window
semaphore bounds items in flight plus outcomes not yet delivered, which is also the bound of the
reorder buffer in ordered mode. Every item that is started ends as exactly one :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._checkpoint import Checkpoint
from ._pipeline import collect_notes

__all__ = ["Outcome", "batch", "batch_iter"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one item ended: a value or an error, never both, never neither."""

    #: Position of the item in the input.
    index: int
    #: The checkpoint key of the item (its index when no checkpoint or key is used).
    key: str
    item: Any
    value: Any = None
    error: BaseException | None = None
    #: Attempts the guarded function made (from its Retry layer), 1 when unknown; 0 when the
    #: outcome was restored from a checkpoint.
    attempts: int = 1
    #: Seconds from start to end of the item (loop clock).
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _progress(enabled: bool | None, total: int | None) -> Any:
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm  # optional dependency (extra "progress"), loaded only when shown

    return tqdm(total=total, unit="item", dynamic_ncols=True)


async def batch_iter(
    fn: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 16,
    ordered: bool = True,
    progress: bool | None = None,
    checkpoint: str | None = None,
    key: Callable[[Any], str] | None = None,
    on_result: Callable[[Outcome], Any] | None = None,
    retry_failed: bool = True,
    window: int | None = None,
) -> AsyncIterator[Outcome]:
    """Run ``await fn(item)`` for every item, yielding one :class:`Outcome` per item.

    * ``concurrency``: items in flight at once. ``window`` (default ``4 * concurrency``) bounds
      items in flight plus outcomes not yet consumed; in ``ordered`` mode it is the reorder
      buffer: a slow item holds back at most ``window`` finished ones, then admission pauses.
    * ``checkpoint``: a JSONL file; each finished item is appended as it completes, and a rerun
      skips items already done (yielding their recorded outcome), retrying failed ones unless
      ``retry_failed=False``. Items are matched by ``key(item)`` (default: position and a stable
      hash of the item).
    * ``progress``: a tqdm bar (rate, ETA, successes, failures); None shows it on a terminal.
    * ``on_result``: called (or awaited) with every outcome.

    One item's failure never stops the batch. If the consumer stops early or is cancelled, the
    workers are cancelled and the items in flight end (recorded in the checkpoint) as cancelled.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if not callable(fn):
        raise TypeError(f"fn must be an async callable taking one item, got {fn!r}")
    window = 4 * concurrency if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or window < concurrency:
        raise ValueError(f"window must be an integer >= concurrency ({concurrency}), got {window!r}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable item -> str, got {key!r}")
    store = Checkpoint(checkpoint, retry_failed=retry_failed) if checkpoint is not None else None
    loop = asyncio.get_running_loop()
    source = _aiter(items)
    source_lock = asyncio.Lock()  # an async source cannot be advanced by two workers at once
    slots = asyncio.Semaphore(window)
    done: asyncio.Queue[Outcome | None] = asyncio.Queue()
    counter = iter(range(sys.maxsize))
    bar = _progress(progress, len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]

    def key_of(index: int, item: Any) -> str:
        if key is not None:
            return str(key(item))
        if store is None:
            return str(index)
        return store.default_key(index, item)

    async def run(index: int, item: Any, item_key: str) -> Outcome:
        start = loop.time()
        notes: dict[str, Any] = {}
        try:
            with collect_notes(notes):
                value = fn(item)
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            return Outcome(index, item_key, item, None, exc, notes.get("retries", 0) + 1,
                           loop.time() - start)
        return Outcome(index, item_key, item, value, None, notes.get("retries", 0) + 1,
                       loop.time() - start)

    async def worker() -> None:
        while True:
            await slots.acquire()
            async with source_lock:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    slots.release()
                    return
                index = next(counter)
            item_key = key_of(index, item)
            restored = store.restore(index, item_key, item) if store is not None else None
            if restored is not None:
                done.put_nowait(restored)
                continue
            try:
                outcome = await run(index, item, item_key)
            except asyncio.CancelledError:  # the batch is stopping: record the item, then stop
                outcome = Outcome(index, item_key, item, None, asyncio.CancelledError(
                    "the batch was stopped before this item finished"), 1, 0.0)
                if store is not None:
                    store.write(outcome)
                raise
            if store is not None:
                store.write(outcome)
            done.put_nowait(outcome)

    async def workers() -> None:
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            done.put_nowait(None)

    runner = asyncio.ensure_future(workers())
    buffer: dict[int, Outcome] = {}
    next_index = 0
    try:
        while True:
            outcome = await done.get()
            if outcome is None:
                await runner  # re-raises a worker's own failure (e.g. from key())
                break
            ready = [outcome]
            if ordered:
                buffer[outcome.index] = outcome
                ready = []
                while next_index in buffer:
                    ready.append(buffer.pop(next_index))
                    next_index += 1
            for outcome in ready:
                slots.release()
                if bar is not None:
                    bar.update(1)
                if on_result is not None:
                    result = on_result(outcome)
                    if inspect.isawaitable(result):
                        await result
                yield outcome
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if store is not None:
            store.close()
        if bar is not None:
            bar.close()


async def batch(fn: Callable[[Any], Any], items: Iterable[Any] | AsyncIterable[Any],
                **options: Any) -> list[Outcome]:
    """Run the whole batch and return every :class:`Outcome` (in input order by default).

    Takes the options of :func:`batch_iter`. For millions of items prefer ``batch_iter``, which
    does not keep the outcomes.
    """
    return [outcome async for outcome in batch_iter(fn, items, **options)]
