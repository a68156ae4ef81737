"""Batch runner: stream items through ``fn`` with bounded memory and exactly one Outcome each.

``concurrency`` long-lived worker tasks pull items from the (sync or async) input one at a time:
there is never a task per item, so a million items run in constant memory. At most
``4 * concurrency`` items are admitted but not yet handed to the consumer (in flight plus
buffered). With ``ordered=True`` that is also the reorder buffer: when one slow item holds the
head, admission pauses once ``4 * concurrency`` items past it were admitted, until it finishes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._core.check import callable_or_none, number, text
from .checkpoint import Checkpoint
from .._core.call import WANT_CALL, call_sink
from .._core.errors import BatchInterrupted
from .._core.public import public

__all__ = ["Outcome", "batch", "batch_iter"]

_log = logging.getLogger("llmguard.batch")


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
    #: Attempts made (read from a guarded function's Retry layer; 1 when unknown).
    attempts: int
    #: Seconds from start to end of the item (loop clock).
    latency: float

    @property
    def ok(self) -> bool:
        """True when the item produced a value."""
        return self.error is None


class PreviousFailure(Exception):
    """A failure recorded in the checkpoint by an earlier run (``retry_failed=False``)."""


def _default_key(index: int, item: Any) -> str:
    from .._cache.key import stable_digest

    return f"{index}:{stable_digest(item, 'item')[:16]}"


class _Run:
    __slots__ = (
        "fn", "concurrency", "ordered", "key", "store", "retry_failed", "limit", "source",
        "is_async", "lock", "admitted", "emitted", "ready", "space", "wake", "stopping",
        "live", "failure", "ok", "failed", "bar", "signal", "workers",
    )

    def __init__(self, fn, items, concurrency, ordered, key, store, retry_failed, bar) -> None:
        self.fn, self.concurrency, self.ordered = fn, concurrency, ordered
        self.key, self.store, self.retry_failed, self.bar = key, store, retry_failed, bar
        self.limit = 4 * concurrency
        self.is_async = isinstance(items, AsyncIterable)
        self.source = aiter(items) if self.is_async else iter(items)
        self.lock = asyncio.Lock()
        self.admitted = self.emitted = self.ok = self.failed = self.live = 0
        self.ready: Any = {} if ordered else deque()
        self.space, self.wake = asyncio.Event(), asyncio.Event()
        self.stopping = False
        self.failure: BaseException | None = None
        self.signal: str | None = None
        #: Worker tasks, started one at a time as items arrive (see ``spawn``).
        self.workers: list[asyncio.Task[None]] = []

    def spawn(self) -> None:
        """Start one more worker. Workers are started as items come in, never more than there
        are items: a huge ``concurrency`` costs nothing until the input can fill it."""
        self.workers.append(asyncio.get_running_loop().create_task(self.work()))
        self.live += 1

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
        fn, store = self.fn, self.store
        try:
            while (nxt := await self._next()) is not None:
                index, item = nxt
                if self.live < self.concurrency:  # this worker is busy: another takes the next
                    self.spawn()
                key = str(index) if self.key is None else self.key(index, item)
                if store is not None and (done := self._restore(index, key, item)) is not None:
                    self._deliver(done)
                    continue
                call_sink.set(WANT_CALL)
                start = loop.time()
                value = error = None
                try:
                    value = await fn(item)
                except Exception as exc:
                    error = exc
                except asyncio.CancelledError as exc:
                    if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        self._finish(Outcome(index, key, item, None, exc, 1, loop.time() - start))
                        raise
                    error = exc  # fn's own cancellation (an inner timeout): a failure of this item
                call = call_sink.get()
                attempts = 1 if call is WANT_CALL or call is None else call.attempt
                self._finish(Outcome(index, key, item, value, error, attempts, loop.time() - start))
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
        if error is not None:
            self.store.dead_letter(record)  # type: ignore[union-attr]
        return Outcome(index, key, item, record.get("value"), error, record.get("attempts", 1), 0.0)

    def _finish(self, outcome: Outcome) -> None:
        if self.store is not None and not isinstance(outcome.error, asyncio.CancelledError):
            record: dict[str, Any] = {"key": outcome.key, "index": outcome.index, "ok": outcome.ok,
                                      "attempts": outcome.attempts, "latency": round(outcome.latency, 6)}
            if outcome.ok:
                record["value"] = outcome.value
            else:
                record["error"] = f"{type(outcome.error).__name__}: {outcome.error}"
                record["item"] = outcome.item
            self.store.write(record)
        self._deliver(outcome)

    def _deliver(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.ordered:
            self.ready[outcome.index] = outcome
        else:
            self.ready.append(outcome)
        self.wake.set()

    def pop(self) -> Outcome | None:
        if self.ordered:
            return self.ready.pop(self.emitted, None)
        return self.ready.popleft() if self.ready else None

    def stop(self) -> None:
        self.stopping = True
        self.space.set()
        self.wake.set()

    def summary(self) -> str:
        return (f"{self.ok + self.failed} items finished ({self.ok} ok, {self.failed} failed); "
                "rerun with the same checkpoint to resume" if self.store else
                f"{self.ok + self.failed} items finished ({self.ok} ok, {self.failed} failed)")


def batch_iter(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int = 16,
    ordered: bool = True,
    progress: bool | None = None,
    checkpoint: str | None = None,
    key: Callable[[Any], Any] | None = None,
    on_result: Callable[[Outcome], Any] | None = None,
    retry_failed: bool = True,
    dead_letter: str | None = None,
    grace: float = 30.0,
    handle_signals: bool = False,
) -> AsyncIterator[Outcome]:
    """Yield one :class:`Outcome` per item (in input order when ``ordered``, else as they finish).

    ``fn(item)`` is awaited per item, at most ``concurrency`` at once; one item's failure never
    stops the batch. ``checkpoint=path`` appends each finished item to a JSONL file and skips
    (yields restored outcomes for) items already done there; failed ones run again unless
    ``retry_failed=False`` (then they are written to ``dead_letter``). On cancellation, or on
    SIGINT/SIGTERM with ``handle_signals=True``, admission stops, in-flight items get ``grace``
    seconds, stragglers end as ``CancelledError`` outcomes, and the checkpoint is flushed;
    a signal then raises :class:`BatchInterrupted` with a summary. Bad arguments raise here, at
    the call, before anything runs.
    """
    _validate(fn, items, concurrency, grace, key, on_result, checkpoint, dead_letter)
    return _outcomes(fn, items, concurrency, ordered, progress, checkpoint, key, on_result,
                     retry_failed, dead_letter, grace, handle_signals)


async def _outcomes(fn: Any, items: Any, concurrency: int, ordered: bool, progress: bool | None,
                    checkpoint: str | None, key: Any, on_result: Any, retry_failed: bool,
                    dead_letter: str | None, grace: float,
                    handle_signals: bool) -> AsyncIterator[Outcome]:
    """The body of :func:`batch_iter`, as an async generator (validated arguments)."""
    keyed = None if key is None else (lambda index, item: str(key(item)))
    if checkpoint is not None and key is None:
        keyed = _default_key
    store = None if checkpoint is None else Checkpoint(checkpoint, dead_letter)
    bar = _progress_bar(progress, items)
    run = _Run(fn, items, concurrency, ordered, keyed, store, retry_failed, bar)
    loop = asyncio.get_running_loop()
    run.spawn()
    workers = run.workers  # grows as items arrive; everything below reads it when it acts
    if handle_signals:
        _install(loop, run, workers, grace)
    try:
        while True:
            outcome = run.pop()
            if outcome is not None:
                run.emitted += 1
                run.space.set()
                _report(run, outcome)
                if on_result is not None and inspect.isawaitable(r := on_result(outcome)):
                    await r
                yield outcome
            elif run.live == 0:
                break
            else:
                run.wake.clear()
                await run.wake.wait()
    except asyncio.CancelledError:
        await _drain(run, workers, grace)
        while (outcome := run.pop()) is not None or run.ready:  # hand drained outcomes over too
            if outcome is None:  # ordered: skip the gap a never-finished index leaves
                run.emitted = min(run.ready)
                continue
            run.emitted += 1
            _report(run, outcome)
            if on_result is not None and inspect.isawaitable(r := on_result(outcome)):
                await r
        raise
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if store is not None:
            store.close()
        if bar is not None:
            bar.close()
    if run.failure is not None:
        raise run.failure
    if run.signal is not None:
        raise BatchInterrupted(f"batch interrupted by {run.signal}: {run.summary()}")


async def _drain(run: _Run, workers: list[asyncio.Task[None]], grace: float) -> None:
    """Stop admitting, give in-flight items ``grace`` seconds, then cancel what is left."""
    run.stop()
    try:
        await asyncio.wait(workers, timeout=grace)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    _log.warning("batch cancelled: %s", run.summary())


def _install(loop: asyncio.AbstractEventLoop, run: _Run, workers: list, grace: float) -> None:
    def on_signal(name: str) -> None:
        if run.signal is not None:  # second signal: do not wait any longer
            for task in workers:
                task.cancel()
            return
        run.signal = name
        run.stop()
        loop.call_later(grace, lambda: [t.cancel() for t in workers])

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)


def _report(run: _Run, outcome: Outcome) -> None:
    bar = run.bar
    if bar is not None:
        bar.update(1)
        if not outcome.ok or run.emitted % 64 == 0:
            bar.set_postfix_str(f"ok={run.ok} failed={run.failed}", refresh=False)


def _progress_bar(progress: bool | None, items: Any) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm  # lazily: `import llmguard` never imports tqdm

    total = len(items) if hasattr(items, "__len__") else None
    return tqdm(total=total, unit="item", dynamic_ncols=True)


def _validate(fn: Any, items: Any, concurrency: Any, grace: Any, key: Any, on_result: Any,
              checkpoint: Any, dead_letter: Any) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be an async callable taking one item, got {fn!r}")
    if not isinstance(items, (Iterable, AsyncIterable)):
        raise TypeError(f"items must be an iterable or async iterable of items, got {items!r}")
    number("concurrency", concurrency, integer=True)
    number("grace", grace, low_open=False, unit=" of seconds")
    for name, value in (("key", key), ("on_result", on_result)):
        callable_or_none(name, value)
    if checkpoint is None and dead_letter is not None:
        raise ValueError("dead_letter needs a checkpoint: pass checkpoint=path as well")
    for name, value in (("checkpoint", checkpoint), ("dead_letter", dead_letter)):
        _check_path(name, value)


def _check_path(name: str, path: Any) -> None:
    """A checkpoint or dead-letter file must be openable for appending: say so before the run."""
    if path is None:
        return
    try:
        text(name, os.fspath(path))
    except TypeError:
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {path!r}") from None
    if os.path.isdir(path):
        raise ValueError(f"{name} {os.fspath(path)!r} is a directory; pass a file path inside it, "
                         "e.g. 'run.jsonl'")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"the directory of {name} {os.fspath(path)!r} does not exist; create it")


async def batch(fn: Callable[[Any], Awaitable[Any]], items: Iterable[Any] | AsyncIterable[Any],
                **options: Any) -> list[Outcome]:
    """Run :func:`batch_iter` to the end and return every Outcome (input order by default).

    Takes the same keyword options. On a handled signal, :class:`BatchInterrupted` carries the
    outcomes that finished in ``.outcomes``.
    """
    outcomes: list[Outcome] = []
    try:
        async for outcome in batch_iter(fn, items, **options):
            outcomes.append(outcome)
    except BatchInterrupted as exc:
        exc.outcomes = outcomes
        raise
    return outcomes
