"""What a deployment learns from what it says: its quotas from ``x-ratelimit-limit-requests``
and ``x-ratelimit-limit-tokens`` (per minute, as OpenAI and Azure OpenAI report them), then the
quota state from the remaining/reset headers and 429s as RateLimit follows them
(``headers.rate_limit_headers``).

``learned_limits`` is a pure function of the headers, tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._admission.ratelimit.headers import pause_after, refusal, report, spend
from .._admission.ratelimit.latency import Margin
from .._admission.ratelimit.quotas import build_quotas

__all__ = ["PROBE", "learned_limits", "observe", "refused"]

#: The ticket of a call sent to a deployment whose quota is not learned yet (nothing reserved).
PROBE: Any = "probe"


def _limit(headers: Any, unit: str) -> int | None:
    value = headers.get(f"x-ratelimit-limit-{unit}")
    if value is None:
        return None
    try:
        limit = int(float(value))
    except (TypeError, ValueError, OverflowError):  # ("inf": no number)
        return None
    return limit if limit > 0 else None


def learned_limits(headers: Mapping[str, str] | None) -> tuple[int | None, int | None] | None:
    """``(rpm, tpm)`` stated by ``headers`` (either may be None), or None when they state
    neither."""
    if headers is None or not callable(getattr(headers, "get", None)):
        return None
    rpm, tpm = _limit(headers, "requests"), _limit(headers, "tokens")
    return None if rpm is None and tpm is None else (rpm, tpm)


def observe(deployment: Any, headers: Mapping[str, str], admitted: float | None = None) -> None:
    """``deployment`` learns its quotas from the first headers that state them, then (the
    answer to an attempt ``admitted`` there at that loop time) the send latency they time, then
    hands them to its quota state as RateLimit does (``x-ratelimit-remaining-*`` /
    ``-reset-*``; with ``refill="auto"``, the server's shape)."""
    d = deployment
    if d.quotas is None:
        limits = learned_limits(headers)
        if limits is None:
            return
        rpm, tpm = limits
        d.quota_margin = Margin(build_quotas(rpm, None, tpm, d.burst, d.margin, d.refill),
                                d.margin)
        if d.spent:
            spend(d.backend, d.quotas, d.key)
    if admitted is not None:  # the send latency (the backend retimes on the new quotas)
        d.quota_margin.observe(headers, admitted)
    report(d.backend, d.quotas, _learning(d), headers, d.key, None)


def refused(deployment: Any, exc: BaseException, ticket: Any, now: float) -> float | None:
    """After ``exc`` at ``deployment``: when it is a 429, nothing more there until its
    Retry-After (shared through the backend, which learns from it as RateLimit's does); the
    pause, else None."""
    d = deployment
    if d.quotas is None:
        seconds = pause_after(exc)
        if seconds is not None:
            d.cool_until = max(d.cool_until, now + seconds)
    else:
        seconds = refusal(d.backend, d.quotas, _learning(d), d.key, exc,
                          None if ticket is PROBE else ticket)
    if seconds is not None:
        d.rate_limited += 1
    return seconds


def _learning(deployment: Any) -> bool:
    return callable(getattr(deployment.backend, "observe", None))
