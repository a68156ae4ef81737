"""OpenAI-style error answers: ``{"error": {"message", "type", "code", "param"}}`` and a status.

Clients (the openai SDK, llmguard itself, LangChain) decide on the status and the headers, so
they are a provider's: 429 with ``retry-after`` for a spent quota, 503 for an open circuit or a
full queue, 504 for a timeout, and for a provider failure after retries and fallbacks the
provider's own status with the error kind (``lg.classify``) as ``code``.
"""

from __future__ import annotations

import json
import re

import llmguard as lg

from .abandon import Abandoned
from .gateway import ShuttingDown
from .tenants import QuotaExceeded, TenantBusy

__all__ = ["HTTPProblem", "Redactor", "StreamTruncated", "error_json", "from_exception"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}

#: Status for a provider failure that carried none, by kind.
_KIND_STATUS = {
    lg.FailureKind.RATE_LIMITED: 429, lg.FailureKind.QUOTA_EXHAUSTED: 429,
    lg.FailureKind.OVERLOADED: 503, lg.FailureKind.TIMEOUT: 504, lg.FailureKind.CONNECTION: 502,
    lg.FailureKind.SERVER_ERROR: 502, lg.FailureKind.CONTEXT_WINDOW: 400,
    lg.FailureKind.CONTENT_POLICY: 400, lg.FailureKind.BAD_REQUEST: 400,
    lg.FailureKind.AUTH: 502, lg.FailureKind.UNKNOWN: 500,
}


class HTTPProblem(Exception):
    """A request the gateway answers with an error (bad input, auth, unknown model)."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param
        self.headers = headers or {}


class StreamTruncated(Exception):
    """The upstream's stream ended before every choice had its ``finish_reason`` (or without
    ``[DONE]``): the answer is cut, and is reported so, never passed off as complete."""


def error_json(status: int, message: str, code: str | None, param: str | None = None,
               type_: str | None = None) -> bytes:
    """The body of an error answer (OpenAI's shape)."""
    kind = type_ or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": param,
                                 "code": code}}).encode()


class Redactor:
    """Removes credentials from text that leaves the process (error bodies, logs): the secrets
    the gateway knows (upstream keys) and anything shaped like a bearer token or ``sk-`` key."""

    _PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._\-]{6,})")

    def __init__(self, secrets: list[str] = ()) -> None:  # type: ignore[assignment]
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return self._PATTERN.sub("[redacted]", text)


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"retry-after": str(max(1, int(seconds + 0.999))),
            "retry-after-ms": str(max(1, int(seconds * 1000)))}


def from_exception(exc: BaseException, redact: Redactor) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)`` answering a request that failed with ``exc``."""
    if isinstance(exc, HTTPProblem):
        return exc.status, error_json(exc.status, str(exc), exc.code, exc.param), exc.headers
    if isinstance(exc, QuotaExceeded):
        return 429, error_json(429, str(exc), "rate_limit_exceeded", type_=exc.unit), exc.headers
    if isinstance(exc, ShuttingDown):
        return 503, error_json(503, str(exc), "server_shutting_down"), {
            **_retry_after(1.0), "connection": "close"}
    if isinstance(exc, lg.BudgetExceeded):  # the tenant's max_budget: OpenAI's "out of credit"
        return 429, error_json(429, str(exc), "insufficient_quota", type_="insufficient_quota"), {}
    if isinstance(exc, TenantBusy):
        return 429, error_json(429, str(exc), "concurrency_limit_exceeded"), _retry_after(1.0)
    if isinstance(exc, Abandoned):  # nobody reads this answer; 499 as nginx logs it
        return 499, error_json(499, str(exc), "client_closed_request"), {}
    if isinstance(exc, StreamTruncated):
        return 502, error_json(502, str(exc), "upstream_stream_truncated"), {}
    if isinstance(exc, lg.RequestTooLarge):
        return 400, error_json(400, str(exc), "request_too_large"), {}
    if isinstance(exc, lg.CircuitOpenError):
        return 503, error_json(503, str(exc), "circuit_open"), _retry_after(exc.retry_after)
    if isinstance(exc, (lg.QueueFull, lg.AdmissionTimeout)):
        return 503, error_json(503, str(exc), "overloaded"), _retry_after(1.0)
    if isinstance(exc, lg.TimeoutExceeded):
        return 504, error_json(504, str(exc), "timeout"), {}
    if isinstance(exc, lg.FallbackExhausted):  # the primary and every fallback failed: the last
        last = exc.exceptions[-1]
        status, _body, headers = from_exception(last, redact)
        kind = lg.classify(last).kind.value if isinstance(last, Exception) else "unknown"
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
        return status, error_json(status, redact(f"every model failed: {detail}"), kind), headers
    failure = lg.classify(exc) if isinstance(exc, Exception) else None
    kind = failure.kind if failure is not None else lg.FailureKind.UNKNOWN
    status = failure.status if failure is not None and failure.status else _KIND_STATUS[kind]
    if status in (401, 403):  # the upstream refused the gateway's key: not the client's fault
        status = 502
    message = redact(f"{type(exc).__name__}: {exc}")
    retry = failure.retry_after if failure is not None else None
    return status, error_json(status, message, kind.value), _retry_after(retry)
