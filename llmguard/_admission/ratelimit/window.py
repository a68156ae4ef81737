"""Quota accounting: the pure arithmetic behind ``RateLimit``'s in-memory backend.

Why a sliding-window log by default and not a token bucket (aiolimiter) or GCRA: many providers
and gateways enforce "at most N requests and T tokens in any (or each clock) 60 s window". A
token bucket of capacity B refilled at N/60 per second admits up to N + B in some 60 s window,
so it either trips 429s there or must run below quota. A log of admissions in the window is
exact: it never admits more than the quota in any window and can use all of it. It also supports
what aiolimiter cannot: reconciling an entry to the actual usage, refunding it, pausing, and
capping headroom to what the provider reports. Providers that do refill continuously (OpenAI,
Anthropic) are paced by a :class:`.bucket.Bucket` per quota instead (``Quota.continuous``).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..._core.public import public
from .bucket import Bucket

__all__ = ["Entry", "Quota", "Window"]

#: Added to every computed wait so float rounding never lands an admission on the instant the
#: provider still counts the expiring entry inside its window.
SLACK = 1e-3


@public
@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` requests (``tokens=False``) or tokens in any ``window`` seconds; or,
    ``continuous=True``, a bucket of ``limit`` refilled at ``limit / window`` per second."""

    limit: int
    window: float
    tokens: bool
    continuous: bool = False

    def describe(self) -> str:
        unit = "tokens" if self.tokens else "requests"
        per = {60.0: "minute", 1.0: "second"}.get(self.window, f"{self.window:g} s")
        return f"{self.limit} {unit} per {per}" + (" (refilled continuously)"
                                                   if self.continuous else "")


class Entry:
    """One admission: when, how many tokens, and whether it still counts as a request; with
    buckets, the window that has yet to settle it (None once settled)."""

    __slots__ = ("time", "tokens", "live", "owner")

    def __init__(self, time: float, tokens: int, owner: Any = None) -> None:
        self.time = time
        self.tokens = tokens
        self.live = 1  # 0 once refunded
        self.owner = owner


class _Track:
    """One quota's sliding log: the entries inside its window and their running total."""

    __slots__ = ("quota", "limit", "span", "tokens", "entries", "used")

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        # the quota's fields, read on every admission
        self.limit, self.span, self.tokens = quota.limit, quota.window, quota.tokens
        self.entries: deque[Entry] = deque()
        self.used = 0

    def weight(self, entry: Entry) -> int:
        return entry.tokens if self.tokens else entry.live

    def expire(self, now: float) -> None:
        horizon = now - self.span
        entries = self.entries
        while entries and entries[0].time <= horizon:
            entry = entries.popleft()
            self.used -= entry.tokens if self.tokens else entry.live

    def fits(self, now: float, tokens: int) -> bool:
        """True when one request of ``tokens`` fits now."""
        entries = self.entries
        if entries and entries[0].time <= now - self.span:
            self.expire(now)
        return self.used + (tokens if self.tokens else 1) <= self.limit

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` more fits (0.0 if it fits now)."""
        self.expire(now)
        excess = self.used + need - self.quota.limit
        if excess <= 0:
            return 0.0
        for entry in self.entries:  # oldest first: the window frees them in this order
            excess -= self.weight(entry)
            if excess <= 0:
                return entry.time + self.quota.window - now
        return self.quota.window  # over-charged by reconciliation beyond the quota: a full window

    def add(self, now: float, entry: Entry) -> None:
        self.entries.append(entry)
        self.used += entry.tokens if self.tokens else 1

    def adjust(self, now: float, entry: Entry, tokens: int, live: int) -> None:
        horizon = now - self.span
        entries = self.entries
        if entries and entries[0].time <= horizon:
            self.expire(now)  # first, so an expiring entry leaves with the weight it counted
        if entry.time > horizon:  # still inside this window
            self.used += (tokens - entry.tokens) if self.tokens else (live - entry.live)

    def idle(self, now: float) -> bool:
        self.expire(now)
        return not self.entries

    def available(self, now: float) -> int:
        self.expire(now)
        return self.quota.limit - self.used


class Window:
    """Admissions of one partition against several quotas, plus a pause and provider caps."""

    __slots__ = ("tracks", "paused_until", "caps", "buckets")

    def __init__(self, quotas: tuple[Quota, ...]) -> None:
        self.tracks: tuple[Any, ...] = tuple(
            Bucket(q) if q.continuous else _Track(q) for q in quotas)
        #: True when any quota refills continuously (each entry is then settled exactly once).
        self.buckets = any(q.continuous for q in quotas)
        #: Loop time before which nothing is admitted (a provider's Retry-After).
        self.paused_until = 0.0
        #: [remaining, until] per unit (False: requests, True: tokens) reported by the provider.
        self.caps: dict[bool, list[float]] = {}

    def wait(self, now: float, tokens: int) -> float:
        """Seconds until one request of ``tokens`` may be admitted; 0.0 means now.

        Every positive wait has ``SLACK`` added: a pause ending a float sliver past a tick of the
        loop clock (5.2 + 0.799559 on a microsecond virtual clock) would otherwise ask for a
        1e-16 s wait and be re-checked at the same clock reading forever (a busy loop), and a
        bucket must be a hair past full enough when the provider checks it."""
        wait = self.paused_until - now
        for track in self.tracks:
            wait = max(wait, track.wait(now, tokens if track.quota.tokens else 1))
        for unit, (remaining, until) in self.caps.items():
            if until > now and remaining < (tokens if unit else 1):
                wait = max(wait, until - now)
        return wait + SLACK if wait > 0.0 else 0.0

    def take(self, now: float, tokens: int) -> Entry | None:
        """Admit one request of ``tokens`` now if every quota has room (the same test as
        ``wait(now, tokens) == 0.0``, in one pass): its entry, else None with nothing recorded.
        The path of every admission, so it is written out rather than built from ``add``."""
        if self.paused_until > now:
            return None
        tracks = self.tracks
        for track in tracks:
            if not track.fits(now, tokens):
                return None
        caps = self.caps
        if caps:
            for unit, (remaining, until) in caps.items():
                if until > now and remaining < (tokens if unit else 1):
                    return None
            for unit, cap in caps.items():
                cap[0] -= tokens if unit else 1
        entry = Entry(now, tokens, self if self.buckets else None)
        for track in tracks:
            track.add(now, entry)
        return entry

    def idle(self, now: float) -> bool:
        """True when nothing is in any window, no pause or cap applies: a fresh window's state."""
        for track in self.tracks:
            if not track.idle(now):
                return False
        return self.paused_until <= now and all(until <= now for _, until in self.caps.values())

    def add(self, now: float, tokens: int) -> Entry:
        """Record an admission at ``now`` (after ``wait(now, tokens)`` returned 0)."""
        entry = Entry(now, tokens, self if self.buckets else None)
        for track in self.tracks:
            track.add(now, entry)
        for unit, cap in self.caps.items():
            cap[0] -= tokens if unit else 1
        return entry

    def adjust(self, now: float, entry: Entry, tokens: int, live: int = 1) -> None:
        """Change an entry to ``tokens`` (reconcile) or remove it (``live=0``, refund). With
        buckets this settles it (call it for every entry, even with its tokens unchanged): a
        second call, or one for an entry of another window, changes nothing."""
        if self.buckets:
            if entry.owner is not self:
                return
            entry.owner = None
        for track in self.tracks:
            track.adjust(now, entry, tokens, live)
        entry.tokens = tokens
        entry.live = live

    def cap(self, now: float, tokens: bool, remaining: int, reset: float) -> None:
        """The provider says only ``remaining`` are left until ``reset`` seconds from now.

        A bucket takes it as the provider's level now (its ``reset`` is when the provider's
        bucket is full again, not when ``remaining`` stops applying); a log records a cap."""
        buckets = [t for t in self.tracks if t.quota.tokens is tokens]
        if buckets and all(isinstance(t, Bucket) for t in buckets):
            for bucket in buckets:
                bucket.drain_to(now, remaining)
            return
        self.caps[tokens] = [remaining, now + reset]

    def available(self, now: float, tokens: bool) -> int:
        """Headroom now in requests or tokens (the tightest quota or cap), for gauges."""
        free = [track.available(now) for track in self.tracks if track.quota.tokens is tokens]
        cap = self.caps.get(tokens)
        if cap is not None and cap[1] > now:
            free.append(int(cap[0]))
        return max(0, min(free)) if free else 0
