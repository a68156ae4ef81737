"""One input line through the pipeline to one output record (never raises but cancellation,
and :class:`NotSent` when the spend cap refused the line before anything of it was sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core.call import Call
from .._core.errors import BudgetExceeded
from .._core.layer import Handler
from .._runners.lines import InputLine
from .._runners.record import describe, invalid_input, make_record
from .provider import Provider

__all__ = ["NotSent", "make_worker"]


class NotSent(Exception):
    """The line's first attempt could pass ``--max-cost``: it was not sent, and is not recorded
    (``--resume`` with a new ``--max-cost`` sends it)."""


def _over_budget(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):  # a Fallback's alternates, refused in turn
        return all(_over_budget(e) for e in exc.exceptions)
    return isinstance(exc, BudgetExceeded)


def make_worker(handler: Handler, provider: Provider, *, model: str | None,
                cache: bool) -> Callable[[InputLine], Any]:
    """The per-line coroutine function: never raises (except cancellation), returns a record
    (the format of :mod:`llmguard._runners.record`, shared with ``--ray``)."""

    async def run_one(job: InputLine) -> dict[str, Any]:
        if job.request is None:
            return invalid_input(job.id, job.line, job.metadata, job.problem or "")
        request = job.request
        if model is not None:
            request["model"] = model
        else:
            request.setdefault("model", "fake")
        requested = request["model"]
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = Call(provider, (), request, "llmguard-run")
        call.priority = job.priority
        response = error = None
        try:
            response = await handler(call)
        except Exception as exc:  # recorded, never raised: one line's failure never stops a run
            if call.record.sent == 0 and _over_budget(exc):
                raise NotSent(str(exc)) from None
            error = describe(exc)
        return make_record(job.id, job.line, job.metadata, response=response, error=error,
                           done=call.record, elapsed=loop.time() - start, requested=requested,
                           cache=cache)

    return run_one
