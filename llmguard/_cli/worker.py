"""One input line through the pipeline to one output record (never raises but cancellation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core.call import Call, Handler
from .._core.classify import classify
from .._core.redact import redact
from .._core.tokens import extract_usage
from .io import Job
from .provider import Provider, cost_of, to_json

__all__ = ["make_worker", "record_for"]


def _error(kind: str, exc_type: str, message: str) -> dict[str, str]:
    # Messages can echo what was sent (a key in a URL, a bearer header): never write those.
    return {"kind": kind, "type": exc_type, "message": redact(message)}


def _describe(exc: Exception) -> dict[str, str]:
    if isinstance(exc, BaseExceptionGroup):  # FallbackExhausted: every model failed
        last = exc.exceptions[-1]
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
        kind = classify(last).kind.value if isinstance(last, Exception) else "unknown"
        return _error(kind, type(exc).__name__, f"{exc.message}: {detail}")
    return _error(classify(exc).kind.value, type(exc).__name__, str(exc))


def _record(job: Job, **fields: Any) -> dict[str, Any]:
    record = {"id": job.id, "line": job.line, "ok": False, "model": None, "response": None,
              "error": None, "usage": None, "cost": None, "latency": None, "elapsed": None,
              "attempts": 0, "retries": 0, "fallback": False, "cached": False,
              "metadata": job.metadata}
    record.update(fields)
    return record


def make_worker(handler: Handler, provider: Provider, *, model: str | None,
                cache: bool) -> Callable[[Job], Any]:
    """The per-line coroutine function: never raises (except cancellation), returns a record."""

    async def run_one(job: Job) -> dict[str, Any]:
        if job.request is None:
            return _record(job, error=_error("invalid_input", "InvalidInput", job.problem or ""))
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
            error = _describe(exc)
        elapsed = loop.time() - start
        done = call.record
        answered = done.models[-1] if done.models else requested
        usage = extract_usage(response) if error is None else None
        return _record(
            job, ok=error is None, model=answered, error=error, elapsed=round(elapsed, 6),
            latency=None if done.latency is None else round(done.latency, 6),
            response=to_json(response), cost=cost_of(response),
            usage=None if usage is None else {"input_tokens": usage.input_tokens,
                                              "output_tokens": usage.output_tokens},
            attempts=done.sent, retries=done.retries,
            fallback=done.fallback is not None,
            cached=cache and error is None and done.sent == 0,
        )

    return run_one



record_for = _record
