"""What providers say about their rate limits: ``x-ratelimit-remaining-*`` / ``-reset-*``
headers, and the pause a 429 asks for."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..._core.classify import FailureKind, classify
from ..._core.errors import AdmissionError

__all__ = ["DEFAULT_PAUSE", "parse_duration", "pause_after", "rate_limit_headers"]

#: Seconds to pause admissions after a 429 that carries no Retry-After (OpenAI and Anthropic
#: send one almost always; when absent, one second lets a per-second quota refill without
#: idling a per-minute one for long).
DEFAULT_PAUSE = 1.0


def pause_after(exc: BaseException) -> float | None:
    """Seconds to pause a key after ``exc``: its Retry-After when :func:`llmguard.classify` says
    the provider rate-limited the call (``DEFAULT_PAUSE`` without one), else None. Never for a
    cancellation or llmguard's own refusals."""
    if not isinstance(exc, Exception) or isinstance(exc, AdmissionError):
        return None
    failure = classify(exc)
    if failure.kind is not FailureKind.RATE_LIMITED:
        return None
    return DEFAULT_PAUSE if failure.retry_after is None else failure.retry_after

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: Any) -> float | None:
    """Seconds from an OpenAI reset header: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def rate_limit_headers(headers: Mapping[str, str]) -> Iterator[tuple[bool, int, float]]:
    """``(tokens, remaining, reset seconds)`` for each of ``requests`` (``tokens=False``) and
    ``tokens`` whose remaining and reset headers are both present and readable."""
    get = getattr(headers, "get", None)
    if get is None:
        return
    for unit, tokens in (("requests", False), ("tokens", True)):
        remaining = get(f"x-ratelimit-remaining-{unit}")
        reset = parse_duration(get(f"x-ratelimit-reset-{unit}"))
        if remaining is None or reset is None:
            continue
        try:
            left = int(float(remaining))
        except ValueError:
            continue
        yield tokens, left, reset
