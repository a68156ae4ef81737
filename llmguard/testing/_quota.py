"""Quota policies of simulated servers: a fixed clock window and a continuously refilling bucket.

Each policy is plain state over numbers and a clock reading passed in (no event loop), so the
servers in :mod:`._servers` and the ideal-time arithmetic share one definition of "room":

* ``wait(now, amount)``: seconds until ``amount`` fits (0.0: it fits now; ``inf``: never);
* ``take(now, amount)``: charge it (the caller checked ``wait`` first);
* ``remaining(now)`` / ``reset(now)``: what ``x-ratelimit-remaining-*`` / ``-reset-*`` report;
* ``earliest(k, amount, start)``: when the ``k``-th of a run of equal requests starting at
  ``start`` (1-based) can be admitted at the soonest, the quota-bound ideal;
* ``peak(arrivals)``: the most units that arrived within one of this policy's windows.

Also what the servers record (:class:`Arrival`, :class:`ServerStats`) and check.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._core.check import number

__all__ = ["Arrival", "FixedWindow", "ServerStats", "SlidingWindow", "TokenBucket", "check_quotas",
           "format_reset", "sliding_peak"]


class FixedWindow:
    """``limit`` units per clock window ``[epoch + i * window, epoch + (i + 1) * window)``.

    The count starts from zero at every window boundary, whatever happened just before it:
    a client may send ``limit`` at the end of one window and ``limit`` more at the start of the
    next (what a per-minute counter keyed by the clock minute does).
    """

    __slots__ = ("limit", "window", "epoch", "_index", "_used")

    def __init__(self, limit: int, window: float, epoch: float = 0.0) -> None:
        self.limit = limit  #: units per window
        self.window = window  #: seconds per window
        self.epoch = epoch  #: a window boundary (loop time)
        self._index = -math.inf  # the window ``_used`` belongs to
        self._used = 0

    def index(self, now: float) -> int:
        return math.floor((now - self.epoch) / self.window)

    def _roll(self, now: float) -> None:
        index = self.index(now)
        if index != self._index:
            self._index, self._used = index, 0

    def wait(self, now: float, amount: int) -> float:
        if amount > self.limit:
            return math.inf
        self._roll(now)
        if self._used + amount <= self.limit:
            return 0.0
        return self.epoch + (self._index + 1) * self.window - now

    def take(self, now: float, amount: int) -> None:
        self._roll(now)
        self._used += amount

    def give_back(self, now: float, amount: int) -> None:
        """Return ``amount`` units charged too many to the window current at ``now``."""
        self._roll(now)
        self._used = max(0, self._used - amount)

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit - self._used)

    def reset(self, now: float) -> float:
        return self.epoch + (self.index(now) + 1) * self.window - now

    def earliest(self, k: int, amount: int, start: float) -> float:
        if amount <= 0:
            return start
        per_window = self.limit // amount
        if per_window == 0:
            return math.inf
        later = (k - 1) // per_window
        return start if later == 0 else self.epoch + (self.index(start) + later) * self.window

    def peak(self, arrivals: Iterable[tuple[float, int]]) -> int:
        counts: dict[int, int] = {}
        for at, amount in arrivals:
            index = self.index(at)
            counts[index] = counts.get(index, 0) + amount
        return max(counts.values(), default=0)

    def __repr__(self) -> str:
        return f"<FixedWindow {self._used}/{self.limit} per {self.window:g} s>"


class SlidingWindow:
    """At most ``limit`` units within any ``window`` seconds (a log of arrivals): room comes
    back as each admission leaves the window, one by one."""

    __slots__ = ("limit", "window", "_log")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit  #: units per window
        self.window = window  #: seconds
        self._log: deque[tuple[float, int]] = deque()

    def _expire(self, now: float) -> int:
        while self._log and self._log[0][0] <= now - self.window:
            self._log.popleft()
        return sum(amount for _, amount in self._log)

    def wait(self, now: float, amount: int) -> float:
        if amount > self.limit:
            return math.inf
        excess = self._expire(now) + amount - self.limit
        for at, units in self._log:
            if excess <= 0:
                break
            excess -= units
            if excess <= 0:
                return at + self.window - now
        return 0.0

    def take(self, now: float, amount: int) -> None:
        self._expire(now)
        self._log.append((now, amount))

    def remaining(self, now: float) -> int:
        return max(0, self.limit - self._expire(now))

    def reset(self, now: float) -> float:
        """Seconds until the oldest admission leaves the window (0 when empty)."""
        self._expire(now)
        return self._log[0][0] + self.window - now if self._log else 0.0

    def earliest(self, k: int, amount: int, start: float) -> float:
        per_window = self.limit // amount if amount > 0 else k
        if per_window == 0:
            return math.inf
        return start + (k - 1) // per_window * self.window

    def peak(self, arrivals: Iterable[tuple[float, int]]) -> int:
        return sliding_peak(arrivals, self.window)

    def __repr__(self) -> str:
        return f"<SlidingWindow {sum(a for _, a in self._log)}/{self.limit} per {self.window:g} s>"


def sliding_peak(arrivals: Iterable[tuple[float, int]], window: float) -> int:
    """Most units arriving within any ``window`` seconds."""
    items = sorted(arrivals)
    best = total = low = 0
    for at, amount in items:
        total += amount
        while items[low][0] <= at - window:
            total -= items[low][1]
            low += 1
        best = max(best, total)
    return best


class TokenBucket:
    """A bucket of ``capacity`` units refilled continuously at ``capacity / window`` per second,
    full at the start: a request takes its units at admission and none come back.
    """

    __slots__ = ("capacity", "window", "rate", "_level", "_at")

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = capacity  #: the bucket's size (the per-window quota)
        self.window = window  #: seconds to refill an empty bucket
        self.rate = capacity / window  #: units per second
        self._level = float(capacity)
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def wait(self, now: float, amount: int) -> float:
        if amount > self.capacity:
            return math.inf
        self._refill(now)
        return max(0.0, (amount - self._level) / self.rate)

    def take(self, now: float, amount: int) -> None:
        self._refill(now)
        self._level -= amount

    def give_back(self, now: float, amount: int) -> None:
        """Return ``amount`` units charged too many (never above a full bucket): Anthropic's
        output tokens, charged as ``max_tokens`` and adjusted to the output when it ends."""
        self._refill(now)
        self._level = min(self.capacity, self._level + amount)

    def remaining(self, now: float) -> int:
        self._refill(now)
        return max(0, math.floor(self._level + 1e-9))

    def reset(self, now: float) -> float:
        self._refill(now)
        return (self.capacity - self._level) / self.rate

    def earliest(self, k: int, amount: int, start: float) -> float:
        if amount > self.capacity:
            return math.inf
        return start + max(0.0, (k * amount - self.capacity) / self.rate)

    def peak(self, arrivals: Iterable[tuple[float, int]]) -> int:
        """Most units arriving within any ``window`` seconds (a sliding window)."""
        return sliding_peak(arrivals, self.window)

    def __repr__(self) -> str:
        return f"<TokenBucket {self._level:.1f}/{self.capacity} per {self.window:g} s>"


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``,
    ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(math.ceil(seconds * 1000) / 1000, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def check_quotas(rpm: Any, tpm: Any) -> None:
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        number(name, value, integer=True, optional=True, hint="; or None for no such quota")
    if rpm is None and tpm is None:
        raise ValueError("a quota server needs rpm= and/or tpm= (per window=)")


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as the server saw it: when, what it was charged, what it answered."""

    at: float
    tokens: int
    status: int  #: 200 admitted, 429 rate limited, 503 overloaded


@dataclass(frozen=True, slots=True)
class ServerStats:
    arrivals: int
    served: int
    rate_limited: int
    overloaded: int
    #: Requests that arrived (were charged) and were then cancelled or disconnected.
    cancelled_after_arrival: int
    in_flight: int
    max_in_flight: int
    #: Most requests / tokens that ARRIVED (admitted or not) within one of the server's windows.
    peak_window_requests: int
    peak_window_tokens: int
    first_arrival: float | None
    last_completion: float | None
