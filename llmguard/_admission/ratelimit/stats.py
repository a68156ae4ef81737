"""What :meth:`RateLimit.statistics` returns."""

from __future__ import annotations

from dataclasses import dataclass

from ..._core.public import public
from ..._core.stats import LayerStats

__all__ = ["RateLimitStats"]


@public
@dataclass(frozen=True, slots=True)
class RateLimitStats(LayerStats):
    """A snapshot of a :class:`RateLimit` (headroom is for one key, default None)."""

    requests_available: int
    tokens_available: int
    #: Tokens reserved by calls still in flight (not reconciled yet).
    reserved_tokens: int
    in_flight: int
    waiting: int
    admitted: int
    #: Calls refused at once (RequestTooLarge): never admissible.
    rejected: int
    #: Calls that waited ``max_wait`` and gave up (AdmissionTimeout); not in ``rejected``, so
    #: the two add up to every refusal (as in ``ConcurrencyStats``).
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
    #: Seconds each per-minute window is counted past the server's: the time a request takes
    #: to get there (``margin=`` given, else measured from the answers' headers, 0.5 until then).
    margin: float = 0.0
