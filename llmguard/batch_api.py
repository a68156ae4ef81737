"""Provider batch APIs from Python: OpenAI's Batch API and Anthropic's Message Batches.

::

    from openai import AsyncOpenAI
    from llmguard import batch_api

    results = await batch_api.run(
        [{"custom_id": "q1", "body": {"model": "gpt-4o-mini", "messages": [...]}}, ...],
        client=AsyncOpenAI(), ledger="answers.batches.jsonl")
    for result in results:          # input order, one per request
        print(result.id, result.response or result.error)

The engine behind ``llmguard run --batch-api``: requests are split to the provider's limits (one
model per batch), submitted, polled with backoff and collected; expired and failed lines are
sent once more in a new batch (``retries``). ``ledger`` is the file that makes a crash harmless:
run again with the same requests and ledger after a kill and the batches already submitted are
collected, never submitted twice. ``budget`` (an ``lg.Budget``) caps what the run spends: each
batch reserves its lines' maximum cost at the batch price before it is submitted and settles to
what its output reports; lines the cap leaves unsent end with a ``not_sent`` error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._upstream.batches.engine import BatchRun
from ._upstream.batches.ledger import FileLedger
from ._upstream.batches.plan import Request
from ._upstream.batches.results import LineResult

__all__ = ["BatchRun", "LineResult", "run"]


def _provider(client: Any) -> Any:
    module = type(client).__module__
    if module.startswith("anthropic"):
        from ._upstream.batches.anthropic_batches import AnthropicBatches

        return AnthropicBatches(client)
    if module.startswith("openai"):
        from ._upstream.batches.openai_batches import OpenAIBatches

        return OpenAIBatches(client)
    raise TypeError(f"client must be an openai.AsyncOpenAI (or AsyncAzureOpenAI) or an "
                    f"anthropic.AsyncAnthropic, got {type(client).__qualname__}")


def _request(n: int, item: Any) -> Request:
    if isinstance(item, Request):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("body"), Mapping):
        return Request(str(item.get("custom_id", f"request-{n}")), dict(item["body"]))
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
        return Request(str(item[0]), dict(item[1]))
    raise TypeError(f"requests[{n}] must be a Batch API line {{'custom_id': ..., 'body': "
                    f"{{'model': ..., 'messages': [...]}}}} or an (id, body) pair, got {item!r}")


async def run(requests: Iterable[Any], *, client: Any, ledger: str, retries: int = 1,
              enqueued_tokens: int | None = None, poll: float = 5.0, max_poll: float = 60.0,
              on_progress: Callable[[int], None] | None = None,
              budget: Any = None) -> list[LineResult]:
    """Answer ``requests`` through ``client``'s batch API; results in input order.

    ``requests``: Batch API input lines (``{"custom_id", "body"}``) or ``(id, body)`` pairs of
    chat-completions bodies, ids unique. ``client``: an ``AsyncOpenAI`` (any compatible server
    through its ``base_url``) or an ``AsyncAnthropic``. ``ledger``: a file path kept between
    runs (see the module docstring). ``enqueued_tokens``: the provider's enqueued-token limit
    per model, so batches queue instead of failing. ``on_progress(finished)`` is called after
    each poll with the lines the provider has finished. Failures are results too
    (``result.error``), never exceptions; the provider refusing the client (a bad key, a wrong
    URL) raises its SDK's error. ``budget``: an ``lg.Budget`` the run's spend stays within
    (priced at the provider's batch price: see the module docstring).
    """
    items = [_request(n, item) for n, item in enumerate(requests)]
    ids = [r.id for r in items]
    if len(set(ids)) != len(ids):
        raise ValueError("requests: each custom_id must be unique (results are matched by it)")
    if retries < 0 or isinstance(retries, bool):
        raise ValueError(f"retries must be 0 or more, got {retries!r}")
    from ._upstream.batches.engine import remember, run_batches
    from ._upstream.batches.spend import BatchSpend, not_sent

    provider = _provider(client)
    book = FileLedger(ledger)
    results: dict[str, LineResult] = {}

    def keep(result: LineResult) -> None:
        if result.error is None or result.id not in results:
            results[result.id] = result  # a later answer replaces an earlier failure

    try:
        # Batches an earlier run collected: download their answers again (the provider keeps
        # the files), so a rerun returns every result and submits nothing twice.
        wanted = set(ids)
        for sub in list(book.submissions.values()):
            if sub.collected and sub.batch_id and wanted.intersection(sub.ids):
                remember(provider, sub)
                for result in await provider.results(sub.batch_id):
                    if result.id in wanted:
                        keep(result)
        todo = [r for r in items if r.id not in results or results[r.id].error is not None]
        outcome = await run_batches(
            todo, provider, book, on_result=keep,
            on_progress=on_progress or (lambda finished: None), retries=retries,
            enqueued_tokens=enqueued_tokens, poll=poll, max_poll=max_poll,
            spend=None if budget is None else BatchSpend(budget))
    finally:
        book.close()
    for i in outcome.not_sent:
        results[i] = LineResult(i, error=not_sent(
            budget, "run again with a higher cap and the same ledger to send it"))
    return [results[i] for i in ids]
