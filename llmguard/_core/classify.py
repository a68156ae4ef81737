"""classify(exc) -> Failure: the LLM error taxonomy every policy layer decides on.

Recognises exceptions by duck typing (status code, headers, class names, messages) so that the
openai SDK, litellm and httpx are never imported here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .public import public

__all__ = ["Failure", "FailureKind", "classify", "error_headers", "retry_after_from_headers"]


@public
class FailureKind(enum.Enum):
    """What a failure says about the call and the provider."""

    RATE_LIMITED = "rate_limited"  #: 429 "slow down": retry after a pause
    QUOTA_EXHAUSTED = "quota_exhausted"  #: 429 "insufficient_quota": billing, do not retry
    OVERLOADED = "overloaded"  #: 503/529 "overloaded": retry, back off
    TIMEOUT = "timeout"  #: the request timed out
    CONNECTION = "connection"  #: could not connect / connection dropped
    SERVER_ERROR = "server_error"  #: other 5xx
    CONTEXT_WINDOW = "context_window"  #: prompt too long: a bigger model, not a retry
    CONTENT_POLICY = "content_policy"  #: refused by moderation: another model, not a retry
    AUTH = "auth"  #: 401/403: credentials
    BAD_REQUEST = "bad_request"  #: other 4xx: the request itself is wrong
    UNKNOWN = "unknown"  #: anything else

    @property
    def retryable(self) -> bool:
        """True for transient kinds that the same request may survive on a later attempt."""
        return self in _RETRYABLE

    @property
    def unhealthy(self) -> bool:
        """True for kinds that say the provider (not the request) is in trouble: overloaded,
        timeout, connection, server error. A 429 is not one: the provider is up and pacing us,
        and says when to come back."""
        return self in _UNHEALTHY


_RETRYABLE = frozenset({FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.TIMEOUT,
                        FailureKind.CONNECTION, FailureKind.SERVER_ERROR})
# Why a 429 leaves a circuit closed: Retry honours its pause and RateLimit learns the limit from
# it; a breaker that counted it turned one server-asked pause of seconds into ``open_for``
# (15 s) of CircuitOpenError. Under 30 % injected 429s the README stack failed 877 of 3,000
# calls that Retry alone finished, the provider idle far longer than asked.
_UNHEALTHY = _RETRYABLE - {FailureKind.RATE_LIMITED}


@public
@dataclass(frozen=True, slots=True)
class Failure:
    """The classification of one exception."""

    kind: FailureKind
    #: Seconds the provider asked us to wait (Retry-After), if it said.
    retry_after: float | None = None
    #: The HTTP status code, when the exception carried one.
    status: int | None = None
    #: The server's own verdict (``x-should-retry`` header), overriding the kind's.
    should_retry: bool | None = None

    @property
    def retryable(self) -> bool:
        return self.kind.retryable if self.should_retry is None else self.should_retry


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
        if value is None and isinstance(headers, Mapping):
            lowered = {str(k).lower(): v for k, v in headers.items()}
            value = lowered.get(name)
    except Exception:
        return None
    return None if value is None else str(value)


def _seconds(value: str | None, unit: float = 1.0) -> float | None:
    """``value`` as seconds if it is a finite number, else None: "inf" (or past a float's
    range) asked every caller to wait forever, "nan" read as 0 s."""
    try:
        seconds = float(value) * unit  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_from_headers(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    seconds = _seconds(_header(headers, "retry-after-ms"), 0.001)
    value = _header(headers, "retry-after")
    if value is None:  # litellm's proxy forwards the provider's as llm_provider-retry-after
        value = _header(headers, "llm_provider-retry-after")
    if seconds is not None or value is None or (seconds := _seconds(value)) is not None:
        return seconds
    from email.utils import parsedate_to_datetime  # rare: keeps `import llmguard` light

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from . import clock  # imports asyncio: not at `import llmguard`

    if when.tzinfo is None:  # GMT, as every HTTP date (asctime's names no zone; nor "-0000")
        from datetime import timezone  # (rare, as above)

        when = when.replace(tzinfo=timezone.utc)  # (not the machine's local time)
    return max(0.0, when.timestamp() - (clock.wall() if now is None else now))


def _status(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def error_headers(exc: BaseException) -> Any:
    """The provider's response headers an exception carries (the SDKs', litellm's, the testing
    servers'), or None."""
    # litellm keeps the provider's headers in litellm_response_headers; its exc.response is a
    # synthetic response without them.
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if headers:
            return headers
    return None


_QUOTA = ("insufficient_quota", "exceeded your current quota", "billing", "quota exceeded")
_CONTEXT = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
)
_POLICY = ("content_policy", "content policy", "content_filter", "safety system", "moderation")
_OVERLOAD = ("overloaded", "overload", "capacity")

_BY_NAME = {
    "RateLimitError": FailureKind.RATE_LIMITED,
    "ContextWindowExceededError": FailureKind.CONTEXT_WINDOW,
    "ContentPolicyViolationError": FailureKind.CONTENT_POLICY,
    "ServiceUnavailableError": FailureKind.OVERLOADED,
    "InternalServerError": FailureKind.SERVER_ERROR,
    "APITimeoutError": FailureKind.TIMEOUT,
    "Timeout": FailureKind.TIMEOUT,
    "TimeoutException": FailureKind.TIMEOUT,
    "APIConnectionError": FailureKind.CONNECTION,
    "ConnectError": FailureKind.CONNECTION,
    "NetworkError": FailureKind.CONNECTION,
    "RemoteProtocolError": FailureKind.CONNECTION,
    "AuthenticationError": FailureKind.AUTH,
    "PermissionDeniedError": FailureKind.AUTH,
    "BadRequestError": FailureKind.BAD_REQUEST,
    "NotFoundError": FailureKind.BAD_REQUEST,
    "UnprocessableEntityError": FailureKind.BAD_REQUEST,
}


def _kind_from_status(status: int) -> FailureKind:
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (503, 529):
        return FailureKind.OVERLOADED
    if status in (408, 504):
        return FailureKind.TIMEOUT
    if status >= 500:
        return FailureKind.SERVER_ERROR
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 413:
        return FailureKind.CONTEXT_WINDOW
    return FailureKind.BAD_REQUEST


def _refine(kind: FailureKind, message: str) -> FailureKind:
    """Messages disambiguate what status codes conflate (a 429 quota, a 400 context window)."""
    if kind in (FailureKind.RATE_LIMITED, FailureKind.UNKNOWN, FailureKind.BAD_REQUEST):
        if any(s in message for s in _QUOTA):
            return FailureKind.QUOTA_EXHAUSTED
    if kind in (FailureKind.BAD_REQUEST, FailureKind.UNKNOWN):
        if any(s in message for s in _CONTEXT):
            return FailureKind.CONTEXT_WINDOW
        if any(s in message for s in _POLICY):
            return FailureKind.CONTENT_POLICY
    if kind in (FailureKind.SERVER_ERROR, FailureKind.UNKNOWN) and any(
        s in message for s in _OVERLOAD
    ):
        return FailureKind.OVERLOADED
    return kind


def _codes(exc: BaseException) -> str:
    """The structured error codes an exception carries (``exc.code``, ``exc.type``,
    ``body["code"]``, ``body["error"]["code"]``): what the openai SDK and OpenAI-compatible
    servers set, e.g. ``insufficient_quota`` or ``context_length_exceeded``."""
    found: list[str] = []
    body = getattr(exc, "body", None)
    sources: list[Any] = [exc]
    if isinstance(body, Mapping):
        sources.append(body)
        if isinstance(body.get("error"), Mapping):
            sources.append(body["error"])
    for source in sources:
        for name in ("code", "type"):
            value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
            if isinstance(value, str):
                found.append(value)
    return " ".join(found)


def classify(exc: BaseException) -> Failure:
    """Classify an exception from any LLM client into a :class:`Failure`."""
    status = _status(exc)
    headers = error_headers(exc)
    retry_after = retry_after_from_headers(headers)
    if retry_after is None:
        value = getattr(exc, "retry_after", None)
        if isinstance(value, (int, float)) and 0 <= value < math.inf:
            retry_after = float(value)
    kind = None
    for cls in type(exc).__mro__:
        kind = _BY_NAME.get(cls.__name__)
        if kind is not None:
            break
    if kind is None:
        if status is not None:
            kind = _kind_from_status(status)
        elif isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
            kind = FailureKind.TIMEOUT
        elif isinstance(exc, ConnectionError):
            kind = FailureKind.CONNECTION
        else:
            kind = FailureKind.UNKNOWN
    kind = _refine(kind, f"{exc} {_codes(exc)}".lower())
    verdict = _header(headers, "x-should-retry")
    should_retry = {"true": True, "false": False}.get((verdict or "").lower())
    return Failure(kind, retry_after, status, should_retry)
