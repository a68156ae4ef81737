"""What providers say about their rate limits: OpenAI's ``x-ratelimit-remaining-*`` /
``-reset-*`` and Anthropic's ``anthropic-ratelimit-*-remaining`` / ``-reset`` headers, and the
pause a 429 asks for."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..._core.classify import FailureKind, classify
from ..._core.errors import AdmissionError

__all__ = ["DEFAULT_PAUSE", "Report", "parse_duration", "parse_reset", "pause_after",
           "rate_limit_headers"]

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


def parse_reset(value: Any, *, now: float | None = None) -> float | None:
    """Seconds until a reset header's moment: an OpenAI duration (:func:`parse_duration`) or an
    RFC 3339 timestamp, as Anthropic sends (``2026-01-01T12:00:30Z``), measured from ``now``
    (Unix seconds, default the wall clock); a moment past is 0.0."""
    seconds = parse_duration(value)
    if seconds is not None or value is None:
        return seconds
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # RFC 3339 always has an offset; without one, UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class Report(NamedTuple):
    """One quota as a response's headers report it."""

    #: False for requests, True for tokens.
    tokens: bool
    #: ``"input"`` or ``"output"`` for a quota of those tokens only, else ``""``.
    part: str
    remaining: int
    #: Seconds until it is whole again (OpenAI's reset duration, Anthropic's reset time).
    reset: float
    #: The quota's size when reported (``*-limit-*``), else None.
    limit: int | None


#: ``(tokens, part, remaining header, reset header, limit header)`` for each quota reported:
#: OpenAI's (and Azure's, LiteLLM's proxy's) ``x-ratelimit-*``, then Anthropic's
#: ``anthropic-ratelimit-*`` (its ``-tokens-`` is the tightest of input and output).
_REPORTED = (
    *((unit != "requests", "", f"x-ratelimit-remaining-{unit}", f"x-ratelimit-reset-{unit}",
       f"x-ratelimit-limit-{unit}") for unit in ("requests", "tokens")),
    *((unit != "requests", part, f"anthropic-ratelimit-{unit}-remaining",
       f"anthropic-ratelimit-{unit}-reset", f"anthropic-ratelimit-{unit}-limit")
      for unit, part in (("requests", ""), ("tokens", ""), ("input-tokens", "input"),
                         ("output-tokens", "output"))),
)


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def rate_limit_headers(headers: Mapping[str, str]) -> Iterator[Report]:
    """A :class:`Report` for each quota whose remaining and reset headers are both present and
    readable, OpenAI's and Anthropic's alike."""
    get = getattr(headers, "get", None)
    if get is None:
        return
    for tokens, part, remaining, reset, limit in _REPORTED:
        left = _int(get(remaining))
        if left is None:
            continue
        seconds = parse_reset(get(reset))
        if seconds is None:
            continue
        yield Report(tokens, part, left, seconds, _int(get(limit)))
