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
