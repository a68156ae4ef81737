"""Reading providers' rate-limit headers: ``x-ratelimit-remaining-*`` and ``-reset-*``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["parse_duration", "rate_limit_headers"]

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
