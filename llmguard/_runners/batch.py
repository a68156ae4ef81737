"""Batch runner: stream items through ``fn`` with bounded memory and exactly one Outcome each.

The workers, the bounded admission and the reorder buffer are in ``workers``; the checkpoint
file in ``checkpoint``; signals and grace in ``stopper``. This module is the public entry points,
argument checks and the optional progress bar.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from .._core.check import callable_or_none, number, text
from .._core.errors import BatchInterrupted
from .._core.events import records
from .checkpoint import Checkpoint
from .outcomes import Outcomes
from .stopper import Stopper
from .workers import Outcome, PreviousFailure, Run

__all__ = ["Outcome", "PreviousFailure", "batch", "batch_iter"]

_log = logging.getLogger("llmguard.batch")


def _default_key(index: int, item: Any) -> str:
    from .._cache.key import stable_digest

    return f"{index}:{stable_digest(item, 'item')[:16]}"


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
    keep_records: bool = False,
) -> AsyncIterator[Outcome]:
    """Yield one :class:`Outcome` per item (in input order when ``ordered``, else as they finish).

    ``fn(item)`` is awaited per item, at most ``concurrency`` at once; one item's failure never
    stops the batch. ``checkpoint=path`` appends each finished item to a JSONL file and skips
    (yields restored outcomes for) items already done there; failed ones run again unless
    ``retry_failed=False`` (then they are written to ``dead_letter``). On cancellation, or on
    SIGINT/SIGTERM with ``handle_signals=True``, admission stops, in-flight items get ``grace``
    seconds, stragglers end as ``CancelledError`` outcomes, and the checkpoint is flushed;
    a signal then raises :class:`BatchInterrupted` with a summary. ``Outcome.calls`` holds the
    item's call records only with ``keep_records=True`` or when ``batch_iter`` is called inside
    an ``llmguard.recording()`` block (they are most of a large batch's memory). Bad arguments
    raise here, at the call, before anything runs.
    """
    _validate(fn, items, concurrency, grace, key, on_result, checkpoint, dead_letter)
    if not isinstance(keep_records, bool):
        raise TypeError(f"keep_records must be True or False, got {keep_records!r}")
    keep = keep_records or records.get() is not None
    return _outcomes(fn, items, concurrency, ordered, progress, checkpoint, key, on_result,
                     retry_failed, dead_letter, grace, handle_signals, keep)


async def _outcomes(fn: Any, items: Any, concurrency: int, ordered: bool, progress: bool | None,
                    checkpoint: str | None, key: Any, on_result: Any, retry_failed: bool,
                    dead_letter: str | None, grace: float, handle_signals: bool,
                    keep: bool) -> AsyncIterator[Outcome]:
    """The body of :func:`batch_iter`, as an async generator (validated arguments)."""
    keyed = None if key is None else (lambda index, item: str(key(item)))
    if checkpoint is not None and key is None:
        keyed = _default_key
    store = None if checkpoint is None else Checkpoint(checkpoint, dead_letter)
    bar = _progress_bar(progress, items)
    run = Run(fn, items, concurrency, ordered, keyed, store, retry_failed, bar, keep)
    run.spawn()
    workers = run.workers  # grows as items arrive; everything below reads it when it acts
    stopper = Stopper(grace, stop=run.stop, abandon=run.cancel_workers)
    if handle_signals:
        stopper.__enter__()
    try:
        while True:
            outcome = run.pop()
            if outcome is not None:
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
        while (outcome := run.pop_drained()) is not None:  # hand drained outcomes over too
            _report(run, outcome)
            if on_result is not None and inspect.isawaitable(r := on_result(outcome)):
                await r
        raise
    finally:
        run.cancel_workers()
        await asyncio.gather(*workers, return_exceptions=True)
        if handle_signals:
            stopper.__exit__()
        if store is not None:
            store.close()
        if bar is not None:
            bar.close()
    if run.failure is not None:
        raise run.failure
    if stopper.signal is not None:
        raise BatchInterrupted(f"batch interrupted by {stopper.signal}: {run.summary()}")


async def _drain(run: Run, workers: list[asyncio.Task[None]], grace: float) -> None:
    """Stop admitting, give in-flight items ``grace`` seconds, then cancel what is left."""
    run.stop()
    try:
        await asyncio.wait(workers, timeout=grace)
    finally:
        run.cancel_workers()
        await asyncio.gather(*workers, return_exceptions=True)
    # Debug, not warning: the caller's own handling is the account (a CLI prints a summary).
    _log.debug("batch cancelled: %s", run.summary())


def _report(run: Run, outcome: Outcome) -> None:
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
    try:
        from tqdm.auto import tqdm  # lazily: `import llmguard` never imports tqdm
    except ImportError:  # tqdm is optional: no bar rather than a failed batch
        _log.debug("progress bar skipped: tqdm is not installed (pip install tqdm)")
        return None

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
                **options: Any) -> Outcomes:
    """Run :func:`batch_iter` to the end and return every Outcome (input order by default).

    Takes the same keyword options. The result is a read-only sequence of :class:`Outcome`
    kept as columns (about 32 bytes an item beside your item and value, not 240): index it,
    iterate it, or ``list()`` it. On a handled signal, :class:`BatchInterrupted` carries the
    outcomes that finished in ``.outcomes``.
    """
    outcomes = Outcomes()
    try:
        async for outcome in batch_iter(fn, items, **options):
            outcomes._add(outcome)
    except BatchInterrupted as exc:
        exc.outcomes = outcomes
        raise
    return outcomes
