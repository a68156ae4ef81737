"""A deployment's quotas read from what it says: ``x-ratelimit-limit-requests`` and
``x-ratelimit-limit-tokens`` (per minute, as OpenAI and Azure OpenAI report them).

A pure function of the headers, tested directly. The remaining/reset headers that follow the
quota's state are RateLimit's (``headers.rate_limit_headers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["learned_limits"]


def _limit(headers: Any, unit: str) -> int | None:
    value = headers.get(f"x-ratelimit-limit-{unit}")
    if value is None:
        return None
    try:
        limit = int(float(value))
    except (TypeError, ValueError):
        return None
    return limit if limit > 0 else None


def learned_limits(headers: Mapping[str, str] | None) -> tuple[int | None, int | None] | None:
    """``(rpm, tpm)`` stated by ``headers`` (either may be None), or None when they state
    neither."""
    if headers is None or not callable(getattr(headers, "get", None)):
        return None
    rpm, tpm = _limit(headers, "requests"), _limit(headers, "tokens")
    return None if rpm is None and tpm is None else (rpm, tpm)
