"""Continuously refilling quotas: the token-bucket arithmetic behind ``RateLimit(refill="continuous")``.

OpenAI and Anthropic enforce their RPM/TPM limits as buckets that refill continuously: a bucket
of ``limit`` units gains ``limit / window`` per second up to ``limit``, and a request takes its
units at admission. A sliding log (:mod:`.window`) is exact for a fixed- or sliding-window
server, but against a bucket it waits for whole windows once the first burst is spent, where the
provider would already admit at its refill rate. Pacing with the same bucket as the provider's
admits exactly when the provider would: never earlier, never later.

Against a fixed-window server a bucket is unsafe (it admits ``limit`` at the end of one clock
window and its refill on top in the next), which is why the sliding log stays the default.

**Refunds.** A call that never reached the provider gives its units back, but a bucket capped at
``limit`` forgets: the provider's bucket, which never saw the call, may have been full (wasting
refill) while ours was not, so giving back everything can put ours above the provider's. The
amount given back is bounded by :func:`creditable`, which is never more than the provider's
bucket still holds in excess of ours.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Bucket", "creditable", "level_at", "wait_for"]


def level_at(level: float, since: float, now: float, capacity: float, rate: float) -> float:
    """The level of a bucket that held ``level`` at ``since``, refilled at ``rate`` per second up
    to ``capacity``, at ``now`` (a level below zero, over-charged, refills the same way)."""
    if now <= since:
        return level
    return min(capacity, level + (now - since) * rate)


def wait_for(level: float, need: float, rate: float) -> float:
    """Seconds until a bucket holding ``level`` and refilling at ``rate`` holds ``need``
    (0.0 when it already does)."""
    if need <= level:
        return 0.0
    return (need - level) / rate


def creditable(capacity: float, after: float, rate: float, elapsed: float,
               credited_since: float) -> float:
    """The most units a refund may give back to a bucket without it exceeding the provider's.

    ``after`` is our level just after the refunded charge, ``elapsed`` the seconds since, and
    ``credited_since`` what other refunds gave back in between. The provider's bucket (which never
    saw the charge) holds at least as much as ours plus the charge until it reaches ``capacity``,
    and it cannot reach it before it has refilled ``capacity - after - charge``: by the refill
    since, or by other refunds. What the cap may have wasted is at most what came in beyond that,
    so ``capacity - after - rate * elapsed - credited_since`` (clamped at 0; at most the charge,
    which the caller applies) is always safe to give back. A refund right after the charge gives
    back all of it; one long after, with the bucket idle meanwhile, gives back nothing (it is
    full anyway).
    """
    return max(0.0, capacity - after - rate * elapsed - credited_since)


class Bucket:
    """One quota as a continuously refilling bucket: the track :class:`.window.Window` keeps for
    a ``Quota(..., continuous=True)``. Same surface as the sliding log's track."""

    __slots__ = ("quota", "index", "rate", "level", "at", "credited")

    def __init__(self, quota: Any, index: int) -> None:
        self.quota = quota
        #: This track's position in its window (where an entry keeps its mark for this bucket).
        self.index = index
        #: Units per second.
        self.rate = quota.limit / quota.window
        #: Units held at ``at`` (full at the start, like the provider's).
        self.level = float(quota.limit)
        self.at = -math.inf
        #: Units given back by refunds so far (for :func:`creditable`).
        self.credited = 0.0

    def weight(self, entry: Any) -> int:
        return entry.tokens if self.quota.tokens else entry.live

    def _refill(self, now: float) -> float:
        if now > self.at:
            self.level = min(self.quota.limit, self.level + (now - self.at) * self.rate)
            self.at = now
        return self.level

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` units are in the bucket (0.0 if they are now)."""
        return wait_for(self._refill(now), need, self.rate)

    def add(self, now: float, entry: Any) -> None:
        """Take the entry's units now; the entry keeps our level after it, for a refund."""
        self._refill(now)
        self.level -= self.weight(entry)
        entry.marks[self.index] = (self, self.level, self.credited)

    def adjust(self, now: float, entry: Any, tokens: int, live: int) -> None:
        """Charge the difference when an entry grows; give back what :func:`creditable` allows
        when it shrinks (a reconciliation down or a refund)."""
        delta = (tokens if self.quota.tokens else live) - self.weight(entry)
        if delta == 0:
            return
        self._refill(now)
        if delta > 0:
            self.level -= delta
            return
        owner, after, credited = entry.marks[self.index]
        if owner is not self:  # this bucket was forgotten (full) and made anew since
            return
        credit = min(-delta, creditable(self.quota.limit, after, self.rate, now - entry.time,
                                        self.credited - credited))
        if credit > 0.0:
            self.level = min(self.quota.limit, self.level + credit)
            self.credited += credit
            # what it gave back no longer counts as an excess the provider holds over us
            entry.marks[self.index] = (self, after + credit, credited + credit)

    def drain_to(self, now: float, remaining: float) -> None:
        """The provider reports ``remaining`` units in its bucket: hold no more than that."""
        self.level = min(self._refill(now), float(remaining))

    def idle(self, now: float) -> bool:
        """True when full: exactly what a fresh bucket would be."""
        return self._refill(now) >= self.quota.limit

    def available(self, now: float) -> int:
        return max(0, math.floor(self._refill(now) + 1e-9))

    def __repr__(self) -> str:
        return f"<Bucket {self.level:.1f}/{self.quota.limit} +{self.rate:g}/s>"
