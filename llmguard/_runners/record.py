"""The record of one ``llmguard run`` line: one format for the CLI and for ``--ray``.

One JSON object per input line, field for field what ``llmguard run --help`` documents:
``id, line, ok, model, deployment, response | error {kind, type, message}, usage, cost, latency,
elapsed,
attempts, retries, fallback, cached, metadata``. The CLI's worker and the Ray actors both build
their records here, so a file written by either resumes with the other.
"""

from __future__ import annotations

from typing import Any

from .._core.classify import classify
from .._core.events import CallRecord
from .._core.redact import redact
from .._core.tokens import extract_usage

__all__ = ["cost_of", "describe", "invalid_input", "make_record", "to_json", "to_openai_batch"]


def error(kind: str, exc_type: str, message: str) -> dict[str, str]:
    """An error field; messages can echo what was sent (a key in a URL, a bearer header), so
    they are redacted."""
    return {"kind": kind, "type": exc_type, "message": redact(message)}


def describe(exc: BaseException) -> dict[str, str]:
    """An exception as a record's ``error``: ``{kind, type, message}``."""
    if isinstance(exc, BaseExceptionGroup):  # FallbackExhausted: every alternate failed
        last = exc.exceptions[-1]
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
        kind = classify(last).kind.value if isinstance(last, Exception) else "unknown"
        return error(kind, type(exc).__name__, f"{exc.message}: {detail}")
    if not isinstance(exc, Exception):
        return error("unknown", type(exc).__name__, str(exc))
    return error(classify(exc).kind.value, type(exc).__name__, str(exc))


def cost_of(response: Any) -> float | None:
    """The response's cost in USD, when litellm priced it."""
    hidden = getattr(response, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    return float(cost) if isinstance(cost, (int, float)) else None


def to_json(response: Any) -> Any:
    """A JSON-ready form of a response: dicts as they are, SDK objects through ``model_dump``."""
    if isinstance(response, (dict, list, str, int, float, bool)) or response is None:
        return response
    dump = getattr(response, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_none=True)
    return str(response)


def make_record(id: str, line: int | None, metadata: Any, *, response: Any = None,
                error: dict[str, str] | None = None, done: CallRecord | None = None,
                elapsed: float | None = None, requested: str | None = None,
                cache: bool = False, cost: float | None = None) -> dict[str, Any]:
    """The record of one line: ``response`` (when ``error`` is None) or ``error``, with what
    the call's :class:`~llmguard.CallRecord` ``done`` says happened at the provider;
    ``requested`` is the model the line asked for and ``cache`` says a cache layer was in the
    stack (a success with no attempt sent was then a cache hit); ``cost`` is the answer's price
    when the caller prices it (the gateway's configured prices), else litellm's."""
    done = done if done is not None else CallRecord()
    ok = error is None
    usage = extract_usage(response) if ok and response is not None else None
    return {
        "id": id, "line": line, "ok": ok,
        "model": done.models[-1] if done.models else requested,
        "deployment": done.deployment,
        "response": to_json(response) if ok else None, "error": error,
        "usage": None if usage is None else {"input_tokens": usage.input_tokens,
                                             "output_tokens": usage.output_tokens},
        "cost": (cost if cost is not None else done.cost if done.cost is not None
                 else cost_of(response)) if ok else None,
        "latency": None if done.latency is None else round(done.latency, 6),
        "elapsed": None if elapsed is None else round(elapsed, 6),
        "attempts": done.sent, "retries": done.retries, "fallback": done.fallback is not None,
        "cached": cache and ok and done.sent == 0,
        "metadata": metadata,
    }


def invalid_input(id: str, line: int | None, metadata: Any, problem: str) -> dict[str, Any]:
    """The record of a line that could not be sent (not JSON, no messages, a bad field)."""
    return make_record(id, line, metadata, error=error("invalid_input", "InvalidInput", problem))


def to_openai_batch(record: dict[str, Any]) -> dict[str, Any]:
    """A record in the Batch API's output shape (``--format openai-batch``): ``{"id",
    "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``, so tools that
    read Batch API output read llmguard's, from an online run or a batch run alike. A record
    already in that shape is returned as it is."""
    if "custom_id" in record:
        return record
    ok = record["ok"]
    return {
        "id": f"batch_req_{record['id']}", "custom_id": record["id"],
        "response": {"status_code": 200, "request_id": None, "body": record["response"]}
        if ok else None,
        "error": None if ok else {"code": record["error"]["kind"],
                                  "message": record["error"]["message"]},
    }
