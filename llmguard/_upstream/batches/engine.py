"""Run requests through a provider's batch API: submit, poll, collect, retry; never pay twice.

The engine owns the order of events that makes a crash harmless (see :mod:`.ledger`): a chunk's
intent is durable before its file is uploaded, its batch id the moment the provider returns it,
and "collected" only after every line's result was handed to ``on_result`` (which writes the
output record). On start it first adopts what an earlier run left at the provider (by id, or
found by chunk key when the id never reached the ledger), so those lines are awaited, not sent.

Submissions respect the provider's per-batch limits and, when ``enqueued_tokens`` is given, the
per-model enqueued-token limit: a chunk that does not fit waits until a batch of that model ends
(and a batch the provider fails with ``token_limit_exceeded`` is queued again the same way).
Polling backs off from ``poll`` to ``max_poll`` seconds while nothing changes. With a ``spend``
cap (:mod:`.spend`) each chunk reserves its maximum cost before it is submitted, and the run
stops sending (``not_sent``) once the next line could pass the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from .ledger import BatchLedger, Submission
from .plan import Chunk, Limits, Request, split
from .results import BatchProvider, BatchRun, BatchState, LineResult, describe_running
from .spend import BatchSpend, OverBudget

__all__ = ["BatchProvider", "BatchRun", "describe_running", "remember", "run_batches"]

#: Provider error codes that mean "nothing ran, submit again later".
REQUEUE = frozenset({"token_limit_exceeded"})


@dataclass(slots=True)
class _Live:
    chunk: Chunk
    batch_id: str
    finished: int = 0


async def run_batches(
    requests: Iterable[Request], provider: BatchProvider, ledger: BatchLedger, *,
    on_result: Callable[[LineResult], Awaitable[None] | None],
    on_progress: Callable[[int], Awaitable[None] | None] = lambda finished: None,
    retries: int = 1,
    resend_online: Callable[[list[Request]], Awaitable[None]] | None = None,
    enqueued_tokens: int | None = None,
    poll: float = 1.0, max_poll: float = 60.0,
    stop: asyncio.Event | None = None,
    cancel: asyncio.Event | None = None,
    spend: BatchSpend | None = None,
) -> BatchRun:
    """Answer every request once through ``provider``'s batch API (see the module docstring).

    ``on_result`` gets each line's final result exactly once. Retryable failures (expired,
    cancelled, 429 or 5xx at the provider) are submitted again in a new batch up to ``retries``
    times, or handed to ``resend_online`` (which answers them itself) when given. ``stop``
    set ends the run at the next poll, leaving submitted batches running (``running``).
    ``cancel`` set drops what was not submitted yet, cancels the live batches at the provider
    and collects them when they end (the lines they finished have their answers, the others
    end as ``cancelled`` errors: nothing is sent again). ``on_result`` and ``on_progress``
    may be coroutine functions: they are awaited. ``spend`` reserves each chunk's cost before
    it is submitted (see the module docstring).
    """
    pending = {r.id: r for r in requests}
    outcome = BatchRun()
    live: dict[str, _Live] = {}
    attempts: dict[str, int] = {}
    by_id = dict(pending)

    # 1. Adopt what an earlier run submitted: those lines are awaited, never sent again.
    taken = {s.batch_id for s in ledger.submissions.values() if s.batch_id}
    for sub in ledger.live():
        ids = [i for i in sub.ids if i in by_id]
        if not ids:
            await ledger.write("collected", sub.key)  # every line already has its record
            continue
        if sub.batch_id is None:
            found = await provider.find(sub.key, sub.at, taken, len(sub.ids))
            if found is None:  # never created at the provider: the lines are free to send
                await ledger.write("abandoned", sub.key)
                continue
            await ledger.write("batch", sub.key, batch_id=found)
            taken.add(found)
        chunk = Chunk(sub.model, tuple(by_id[i] for i in ids), 0, 0)
        remember(provider, sub)
        live[sub.batch_id] = _Live(chunk, sub.batch_id)  # type: ignore[index]
        outcome.adopted += 1
        for i in ids:
            pending.pop(i, None)
    limits = Limits(provider.limits.requests, provider.limits.bytes, enqueued_tokens)
    queue: deque[Chunk] = deque(split(pending.values(), limits))
    blocked: set[str] = set()  # models waiting for one of their batches to end
    delay = poll
    progress = 0

    cancelling = False
    while (queue or live) and not (stop is not None and stop.is_set()):
        if cancel is not None and cancel.is_set() and not cancelling:
            cancelling, retries, resend_online = True, 0, None
            queue.clear()
            for batch_id in live:
                await provider.cancel(batch_id)
        # 2. Submit what fits.
        short = False  # a chunk waits for room in the spend cap
        for _ in range(len(queue)):
            chunk = queue.popleft()
            if chunk.model in blocked or not _fits(chunk, live, enqueued_tokens):
                queue.append(chunk)
                continue
            if spend is not None:
                try:
                    chunk, later = await spend.split(chunk)
                except OverBudget:  # the next line could pass the cap: nothing more is sent
                    outcome.not_sent = [i for c in (chunk, *queue) for i in c.ids]
                    queue.clear()
                    break
                short |= later is not None
                queue.extend(() if later is None else (later,))
                if chunk is None:
                    continue
            await ledger.write("intent", chunk.key, model=chunk.model, ids=chunk.ids)
            file_id = await provider.upload(chunk)
            if file_id is not None:
                await ledger.write("file", chunk.key, file_id=file_id)
            batch_id = await provider.create(chunk, file_id)
            await ledger.write("batch", chunk.key, batch_id=batch_id)
            live[batch_id] = _Live(chunk, batch_id)
            outcome.created += 1
        # 3. Poll every live batch; collect the ended ones.
        changed = False
        for batch_id, item in list(live.items()):
            state = await provider.state(batch_id)
            changed |= state.finished != item.finished or state.ended
            item.finished = state.finished
            if not state.ended:
                continue
            del live[batch_id]
            blocked.discard(item.chunk.model)
            retry = await _collect(provider, item, state, ledger, on_result, outcome,
                                   attempts, retries, spend)
            if state.failure in REQUEUE:
                await _requeue(item.chunk, live, queue, blocked, on_result, outcome, state)
            elif retry:
                outcome.resent += len(retry)
                if resend_online is not None:
                    await resend_online(retry)
                else:
                    queue.extend(split(retry, limits))
        # Lines finished: final results plus what live batches report (never going back when a
        # finished-but-failed line is queued for its retry).
        progress = max(progress, outcome.answered + outcome.failed
                       + sum(x.finished for x in live.values()))
        await _maybe(on_progress(progress))
        if not live and not short:
            continue  # nothing to wait for: submit the queue at once
        delay = poll if changed else min(max_poll, delay * 2)
        wake = stop if stop is not None else None if cancelling else cancel
        if wake is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel on 3.11
                async with asyncio.timeout(delay):
                    await wake.wait()
    if live:
        outcome.running = list(live)
        outcome.interrupted = True
    return outcome


async def _requeue(chunk: Chunk, live: dict[str, _Live], queue: deque[Chunk],
                   blocked: set[str], on_result: Callable[[LineResult], Awaitable[None] | None],
                   outcome: BatchRun, state: BatchState) -> None:
    """A batch refused for the enqueued-token limit: wait for a batch of its model to end, or,
    alone and still too big, send it as two halves; a single line too big is its error."""
    outcome.requeued += 1
    if any(x.chunk.model == chunk.model for x in live.values()):
        blocked.add(chunk.model)
        queue.appendleft(chunk)
    elif len(chunk.requests) > 1:
        half = len(chunk.requests) // 2
        for part in (chunk.requests[half:], chunk.requests[:half]):
            queue.appendleft(Chunk(chunk.model, part, chunk.tokens * len(part) //
                                   len(chunk.requests), 0))
    else:
        await _final(on_result, outcome, LineResult(chunk.requests[0].id, error={
            "kind": "invalid_request", "type": state.failure or "token_limit_exceeded",
            "message": state.failure_message or "the line alone exceeds the enqueued-token limit"}))


def _fits(chunk: Chunk, live: dict[str, _Live], limit: int | None) -> bool:
    if limit is None:
        return True
    enqueued = sum(x.chunk.tokens for x in live.values() if x.chunk.model == chunk.model)
    return enqueued == 0 or enqueued + chunk.tokens <= limit


def remember(provider: BatchProvider, sub: Submission) -> None:
    """Tell a provider that numbers lines by position (Anthropic) the ids of ``sub``'s batch."""
    tell = getattr(provider, "remember", None)  # Anthropic maps positions back to ids
    if tell is not None and sub.batch_id is not None:
        tell(sub.batch_id, sub.ids)


async def _maybe(returned: Awaitable[None] | None) -> None:
    if returned is not None:
        await returned


async def _final(on_result: Callable[[LineResult], Awaitable[None] | None], outcome: BatchRun,
                 result: LineResult) -> None:
    await _maybe(on_result(result))
    if result.error is None:
        outcome.answered += 1
    else:
        outcome.failed += 1


async def _collect(provider: BatchProvider, item: _Live, state: BatchState,
                   ledger: BatchLedger, on_result: Callable[[LineResult], Awaitable[None] | None],
                   outcome: BatchRun,
                   attempts: dict[str, int], retries: int,
                   spend: BatchSpend | None) -> list[Request]:
    """Hand each line of an ended batch to ``on_result`` or back for a retry; mark collected."""
    chunk = item.chunk
    if state.failure is not None:
        await ledger.write("abandoned", chunk.key)  # validation refused it: nothing ran or paid
        if spend is not None:
            spend.settle(chunk, [])
        if state.failure in REQUEUE:
            return []
        for request in chunk.requests:
            await _final(on_result, outcome, LineResult(request.id, error={
                "kind": "invalid_request", "type": state.failure,
                "message": state.failure_message or f"the batch failed ({state.failure})"}))
        return []
    wanted = {r.id: r for r in chunk.requests}
    retry: list[Request] = []
    seen: set[str] = set()
    results = await provider.results(item.batch_id)
    if spend is not None:
        spend.settle(chunk, results)
    missing = [LineResult(i, error={"kind": "unknown", "type": "Missing", "message": (
        f"batch {item.batch_id} ended {state.status} without a result for this line")},
        retryable=True) for i in wanted if i not in {r.id for r in results}]
    for result in [*results, *missing]:
        if result.id not in wanted or result.id in seen:
            continue  # a line collected already (a resumed run), or not this run's
        seen.add(result.id)
        if result.error is not None and result.retryable and attempts.get(result.id, 0) < retries:
            attempts[result.id] = attempts.get(result.id, 0) + 1
            retry.append(wanted[result.id])
        else:
            tries = attempts.get(result.id, 0) + 1
            await _final(on_result, outcome, replace(result, attempts=tries))
    await ledger.write("collected", chunk.key, at=time.time())
    return retry
