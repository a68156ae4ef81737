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

**Give-backs.** An output quota's unused part, given back by the server when the answer ends
(Anthropic's rule, :mod:`.giveback`), comes back as far as the server's bucket, full at worst
and charged since with all of ours, can still hold it (:mod:`.output`).

**What the server said.** An answer's unused units come back no higher than the server's last
reading allows (:mod:`.told`): OpenAI keeps them charged.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from .refill import level_at, settle, wait_for
from .told import settled  # (the ceiling's: :meth:`Bucket.settled` calls it)

__all__ = ["Bucket", "level_at", "settle", "wait_for"]


class Bucket:
    """One quota as a continuously refilling bucket: the track :class:`.window.Window` keeps for
    a ``Quota(..., continuous=True)``. Same surface as the sliding log's track."""

    __slots__ = ("quota", "limit", "capacity", "rate", "level", "at", "deficit", "outstanding",
                 "told", "told_at", "since_told", "told_seq", "exact", "owed")

    def __init__(self, quota: Any) -> None:
        self.quota = quota
        #: The bucket's size: the quota's, or a lower limit learned from the server.
        self.limit = quota.limit
        #: ``limit`` as a float, for the refill's arithmetic: the same numbers, but an int
        #: operand costs each comparison and subtraction a conversion (every call, twice).
        self.capacity = float(quota.limit)
        #: Units per second.
        self.rate = quota.limit / quota.window
        #: Units held at ``at`` (full at the start, like the provider's).
        self.level = float(quota.limit)
        self.at = -math.inf
        #: Lower bound on how far the provider's bucket is above ours (see :func:`settle`).
        self.deficit = 0.0
        #: Units of the reservations not settled yet.
        self.outstanding = 0
        #: What the server's last reading leaves us at ``told_at`` less every reservation of
        #: ours not settled then (inf: no reading yet); units of ours taken since (less
        #: refunds, and those before ``told_seq`` it counted as they settle): :mod:`.told`.
        #: (``since_told`` an int: units are whole, and an int added to a float costs a
        #: conversion on every take; the ceiling's float arithmetic reads the same number.)
        self.told, self.told_at, self.since_told, self.told_seq = math.inf, 0.0, 0, 0
        #: The limit was lowered (learned from the server, :meth:`set_limit`) below what is
        #: outstanding: ours was reserved against the higher one, mostly for calls then queued
        #: below and counted again as they leave that queue (:mod:`.held`). Their refunds can
        #: never be given back (:func:`settle` gives back none while more is outstanding than
        #: the bucket holds), so each would count twice (``rpm=300`` against a bucket of 100
        #: ran 2x the ideal); the provider's readings set the level instead (:meth:`read`).
        self.exact, self.owed = False, 0.0

    def weight(self, entry: Any) -> int:
        return entry.tokens if self.quota.tokens else entry.live

    def _refill(self, now: float) -> float:
        if now > self.at:
            limit = self.capacity
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
        self.take(now, entry.tokens if self.quota.tokens else entry.live)

    def take(self, now: float, units: int) -> None:
        """Take ``units`` now, the refill written out (every admission of a learned quota
        takes here, its shared log's pair too: :mod:`.pair`)."""
        level = self.level
        if now > self.at:  # ``self._refill(now)``
            limit = self.capacity
            level += (now - self.at) * self.rate
            if level > limit:
                level = limit
            self.at = now
            if self.deficit > limit - level:
                self.deficit = limit - level
        self.level = level - units
        self.deficit += units
        self.outstanding += units
        self.since_told += units  # (the ceiling: ours taken since the last reading)

    def adjust(self, now: float, entry: Any, tokens: int, live: int) -> None:
        """Settle the entry: it used ``tokens`` (``live=1``) or was refunded (``live=0``)."""
        if self.quota.tokens:
            self.settled(now, entry, entry.tokens, tokens if live else None)
        else:
            self.settled(now, entry, entry.live, 1 if live else None)

    def settled(self, now: float, entry: Any, reserved: int, actual: int | None,
                since: float | None = None) -> None:
        """Settle ``entry``, a reservation of ``reserved`` units that used ``actual`` (None:
        refunded; ``since``: a give-back's, :mod:`.output`): :func:`settle` after a refill, the
        ceiling kept (:func:`.told.settled`), written out for a call that used at least what
        it reserved and for a refund (every answered call of a learned quota settles here, its
        shared log's pair too: :mod:`.pair`; every call counted again as it leaves an inner
        queue is refunded)."""
        level, deficit, limit = self.level, self.deficit, self.capacity
        if now > self.at:  # ``self._refill(now)``
            level += (now - self.at) * self.rate
            if level > limit:
                level = limit
            self.at = now
            if deficit > limit - level:  # the provider's could have filled up meanwhile
                deficit = limit - level
        if actual is not None and actual >= reserved:  # :func:`settle`'s charge
            # charged more lowers the ceiling; one the last reading counted raises it (each
            # skipped when nothing: an int added to a float costs a conversion, every call)
            if entry.seq < self.told_seq:
                self.since_told += actual - 2 * reserved
            elif actual != reserved:
                self.since_told += actual - reserved
            if actual != reserved:
                level -= actual - reserved
            deficit -= reserved
            if deficit > limit - level:
                deficit = limit - level
            self.level, self.deficit = level, deficit if deficit > 0.0 else 0.0
            self.outstanding -= reserved
        elif actual is None:  # a refund: :func:`settle` and the ceiling's, written out (two
            # a call counted again as it leaves an inner queue: :mod:`.move`)
            others = self.outstanding - reserved
            credit = reserved  # what may come back: no more than the provider's is above ours
            if deficit - others < credit:
                credit = deficit - others
            if credit > 0.0:
                level += credit
                deficit -= credit
            if not level < limit:
                level = limit
            if deficit > limit - level:
                deficit = limit - level
            self.level, self.deficit = level, deficit if deficit > 0.0 else 0.0
            self.outstanding = others
            self.since_told -= reserved  # (never counted by the server: the ceiling rises)
        else:  # unused units given back (no higher than the server said: ``told``)
            after, self.deficit, self.outstanding = settle(
                level, deficit, self.outstanding, limit, reserved, actual, since)
            self.level = settled(self, now, entry, reserved, level, after, actual is None)

    def rescale(self, now: float, entry: Any, tokens: int) -> None:
        """``entry``, not settled, took more than the server charged it (``tokens``): the
        difference comes back now and leaves what is outstanding."""
        self._refill(now)
        less = entry.tokens - tokens
        self.level = min(self.limit, self.level + less)
        self.since_told -= less
        self.outstanding -= less
        self.deficit = max(0.0, self.deficit - less)

    def drain_to(self, now: float, remaining: float, since: float | None = None,
                 told: tuple[float, int, float] | None = None) -> None:
        """The provider reports ``remaining`` units in its bucket (as of ``since``, default
        now: the refill since then comes on top): hold no more than that. A reading as of its
        ticket's arrival tells ``(unsettled, first, arrived)``: ours not settled admitted
        before seq ``first`` (it counted them as arrived), and when it arrived (refilled
        since, as the reading model has it): the new :func:`.told.ceiling`."""
        level = self._refill(now)
        said = remaining
        if since is not None and since < now:
            remaining = min(self.limit, remaining + (now - since) * self.rate)
        self.level = min(level, float(remaining))
        if told is not None:
            unsettled, self.told_seq, arrived = told
            self.told_at = min(now, arrived if since is None else min(since, arrived))
            self.told, self.since_told = said - unsettled, 0

    def read(self, now: float, remaining: float, since: float | None = None) -> None:
        """The provider reports ``remaining`` (a certain bound once all of ours sent have
        landed, :mod:`.reading`; as of ``since``, default now: the refill since comes on top):
        :meth:`drain_to`, or, once the limit was lowered (``exact``), hold exactly that, but
        never below empty: a provider's bucket refuses what it does not hold, and a bound below
        zero is ours admitted at once and queued below (to be counted again as each leaves
        the queue: ``owed``, paid back by their refunds before the level rises)."""
        if not self.exact:
            return self.drain_to(now, remaining, since)
        self._refill(now)
        if since is not None and since < now:
            remaining = remaining + (now - since) * self.rate
        # nothing reserved before is known missing from the provider's: a refund of one the
        # bound subtracted gives it back through the bound (``Readings.refund``)
        remaining = min(float(self.limit), float(remaining))
        self.level, self.owed, self.deficit = max(0.0, remaining), max(0.0, -remaining), 0.0

    def give_back(self, units: float) -> None:
        """A reservation the last reading's bound subtracted never reached the provider: its
        ``units`` come back to the level (``exact``), what the bound owes first."""
        paid = min(units, self.owed)
        self.owed -= paid
        self.level = min(float(self.limit), self.level + units - paid)

    def retime(self, now: float, quota: Any) -> None:
        """The same quota with another margin (:mod:`.latency`): its refill rate from now on."""
        self._refill(now)
        self.quota = quota
        self.rate = self.limit / quota.window

    def set_limit(self, now: float, limit: int) -> None:
        """The server admits only ``limit`` per window: a smaller bucket, refilling slower,
        whose level the server's readings set from now on (``exact``) when more is
        outstanding than it holds."""
        self._refill(now)
        self.exact = self.exact or (limit < self.limit and self.outstanding > limit)
        self.limit, self.capacity = limit, float(limit)
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
