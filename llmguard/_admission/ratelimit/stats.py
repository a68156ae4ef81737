"""What :meth:`RateLimit.statistics` returns."""

from __future__ import annotations

from dataclasses import dataclass

from ..._core.public import public

__all__ = ["RateLimitStats"]


@public
@dataclass(frozen=True, slots=True)
class RateLimitStats:
    """A snapshot of a :class:`RateLimit` (headroom is for one key, default None)."""

    requests_available: int
    tokens_available: int
    #: Tokens reserved by calls still in flight (not reconciled yet).
    reserved_tokens: int
    in_flight: int
    waiting: int
    admitted: int
    #: Calls refused: RequestTooLarge and AdmissionTimeout.
    rejected: int
    timed_out: int
    #: Reservations given back (the call never reached the provider).
    refunds: int
    #: 429s seen from the provider (each paused the key).
    rate_limited: int
    #: Seconds until admissions resume after a 429 (0.0 when not paused).
    paused_for: float
    #: The server's limiter as learned (``refill="auto"``): its kind and why ("" if nothing).
    shape: str = ""
    #: The requests and tokens limits in force: a limit learned from the server (a 429 at the
    #: 60th request of ``rpm=60`` window: 59), else the quota's (None: no such quota).
    requests_limit: int | None = None
    tokens_limit: int | None = None
