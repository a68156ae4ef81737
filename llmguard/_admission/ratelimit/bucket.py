"""Continuously refilling quotas: the token-bucket arithmetic behind ``RateLimit(refill="continuous")``.

OpenAI and Anthropic enforce their RPM/TPM limits as buckets that refill continuously: a bucket
of ``limit`` units gains ``limit / window`` per second up to ``limit``, and a request takes its
units at admission. A sliding log (:mod:`.window`) is exact for a fixed- or sliding-window
server, but against a bucket it waits for whole windows once the first burst is spent, where the
provider would already admit at its refill rate. Pacing with the same bucket as the provider's
admits when the provider would: never earlier, and no later than it must.

Against a fixed-window server a bucket is unsafe (it admits ``limit`` at the end of one clock
window and its refill on top in the next), which is why the sliding log stays the default.

**Refunds.** A call that never reached the provider gives its units back, but a bucket capped at
``limit`` forgets: while the call was reserved, the provider's bucket (which never saw it) may
have been full and wasted refill that ours, lower by the reservation, still gained. Giving back
everything would then put ours above the provider's. So each bucket keeps a lower bound on how
far it is below the provider's (``deficit``: grown by each reservation, clipped whenever the
provider's could have reached full) and the units of the reservations not settled yet
(``outstanding``); :func:`settle` gives back only what that bound allows, so our bucket never
holds more than the provider's. A refund soon after its reservation, with the bucket in use,
gives back all of it; one after the bucket had time to fill up gives back nothing.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Bucket", "level_at", "settle", "wait_for"]


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


def settle(level: float, deficit: float, outstanding: float, capacity: float, reserved: float,
           actual: float | None, returned: bool = False) -> tuple[float, float, float]:
    """Settle a reservation of ``reserved`` units: the call used ``actual`` units, or never
    reached the provider (``actual=None``, a refund). Returns the new ``(level, deficit,
    outstanding)``.

    ``deficit`` is a lower bound on how far the provider's bucket would be above ours if none of
    the ``outstanding`` reservations (this one included) had been made. Without this one alone,
    the provider's is at least ``deficit - (outstanding - reserved)`` above ours: that much may
    come back (minus what the call did use). Using more than reserved charges the difference.

    ``returned``: the provider charged all ``reserved`` at arrival and gives the unused back
    when the answer ends (Anthropic's output tokens): all of it comes back to ours as to its,
    up to the bucket's size. Ours took it no later than the provider did, so ours stays the
    lower; the bound above is for what the provider never charged (a refund, an estimate over
    what it counted), and held back the give-back a refill had made up for.
    """
    others = outstanding - reserved
    if actual is not None and (actual >= reserved or returned):
        level -= actual - reserved
        if level > capacity:
            level = capacity
        deficit -= reserved
    else:
        used = actual or 0.0
        # ``max(0.0, min(reserved - used, deficit - others - used))`` and ``min(capacity,
        # level + credit)``, written out (no builtin call: every refund)
        credit = reserved - used
        if deficit - others - used < credit:
            credit = deficit - others - used
        if not credit > 0.0:
            credit = 0.0
        level += credit
        if not level < capacity:
            level = capacity
        deficit -= credit + used
    # max(0, min(deficit, capacity - level)), written out: this runs on every settled call
    if deficit > capacity - level:
        deficit = capacity - level
    return level, deficit if deficit > 0.0 else 0.0, others


class Bucket:
    """One quota as a continuously refilling bucket: the track :class:`.window.Window` keeps for
    a ``Quota(..., continuous=True)``. Same surface as the sliding log's track."""

    __slots__ = ("quota", "limit", "rate", "level", "at", "deficit", "outstanding")

    def __init__(self, quota: Any) -> None:
        self.quota = quota
        #: The bucket's size: the quota's, or a lower limit learned from the server.
        self.limit = quota.limit
        #: Units per second.
        self.rate = quota.limit / quota.window
        #: Units held at ``at`` (full at the start, like the provider's).
        self.level = float(quota.limit)
        self.at = -math.inf
        #: Lower bound on how far the provider's bucket is above ours (see :func:`settle`).
        self.deficit = 0.0
        #: Units of the reservations not settled yet.
        self.outstanding = 0

    def weight(self, entry: Any) -> int:
        return entry.tokens if self.quota.tokens else entry.live

    def _refill(self, now: float) -> float:
        if now > self.at:
            limit = self.limit
            level = self.level + (now - self.at) * self.rate
            if level > limit:
                level = limit
            self.level = level
            self.at = now
            if self.deficit > limit - level:  # the provider's could have filled up meanwhile
                self.deficit = limit - level
        return self.level

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` units are in the bucket (0.0 if they are now)."""
        return wait_for(self._refill(now), need, self.rate)

    def fits(self, now: float, tokens: int) -> bool:
        """True when one request of ``tokens`` fits now."""
        return self._refill(now) >= (tokens if self.quota.tokens else 1)

    def add(self, now: float, entry: Any) -> None:
        """Take the entry's units now."""
        if now > self.at:
            self._refill(now)
        units = entry.tokens if self.quota.tokens else entry.live
        self.level -= units
        self.deficit += units
        self.outstanding += units

    def adjust(self, now: float, entry: Any, tokens: int, live: int) -> None:
        """Settle the entry: it used ``tokens`` (``live=1``) or was refunded (``live=0``)."""
        if self.quota.tokens:
            self.settled(now, entry.tokens, tokens if live else None)
        else:
            self.settled(now, entry.live, 1 if live else None)

    def settled(self, now: float, reserved: int, actual: int | None) -> None:
        """Settle a reservation of ``reserved`` units that used ``actual`` (None: refunded):
        :func:`settle` after a refill, written out for a call that used at least what it
        reserved (every answered call of a learned quota settles here)."""
        level, deficit, limit = self.level, self.deficit, self.limit
        if now > self.at:  # ``self._refill(now)``
            level += (now - self.at) * self.rate
            if level > limit:
                level = limit
            self.at = now
            if deficit > limit - level:  # the provider's could have filled up meanwhile
                deficit = limit - level
        if actual is not None and actual >= reserved:  # :func:`settle`'s charge
            level -= actual - reserved
            deficit -= reserved
            if deficit > limit - level:
                deficit = limit - level
            self.level, self.deficit = level, deficit if deficit > 0.0 else 0.0
            self.outstanding -= reserved
        else:  # a refund, or the unused output the server gives back too (``returned``)
            self.level, self.deficit, self.outstanding = settle(
                level, deficit, self.outstanding, limit, reserved, actual,
                self.quota.part == "output")

    def rescale(self, now: float, entry: Any, tokens: int) -> None:
        """``entry``, not settled, took more than the server charged it (``tokens``): the
        difference comes back now and leaves what is outstanding."""
        self._refill(now)
        less = entry.tokens - tokens
        self.level = min(self.limit, self.level + less)
        self.outstanding -= less
        self.deficit = max(0.0, self.deficit - less)

    def drain_to(self, now: float, remaining: float, since: float | None = None) -> None:
        """The provider reports ``remaining`` units in its bucket (as of ``since``, default
        now: the refill since then comes on top): hold no more than that."""
        level = self._refill(now)
        if since is not None and since < now:
            remaining = min(self.limit, remaining + (now - since) * self.rate)
        self.level = min(level, float(remaining))

    def retime(self, now: float, quota: Any) -> None:
        """The same quota with another margin (:mod:`.latency`): its refill rate from now on."""
        self._refill(now)
        self.quota = quota
        self.rate = self.limit / quota.window

    def set_limit(self, now: float, limit: int) -> None:
        """The server admits only ``limit`` per window: a smaller bucket, refilling slower."""
        self._refill(now)
        self.limit = limit
        self.rate = limit / self.quota.window
        self.level = min(self.level, float(limit))

    def idle(self, now: float) -> bool:
        """True when full with nothing outstanding: exactly what a fresh bucket would be."""
        return self._refill(now) >= self.limit and not self.outstanding

    def available(self, now: float) -> int:
        return max(0, math.floor(self._refill(now) + 1e-9))

    def __repr__(self) -> str:
        return (f"<Bucket {self.level:.1f}/{self.limit} +{self.rate:g}/s "
                f"outstanding={self.outstanding}>")
