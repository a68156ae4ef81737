"""A learned fixed window: at most ``limit`` units per window ``[epoch + i * W, epoch + (i + 1) * W)``.

Against a server that counts per fixed window (a clock minute, LiteLLM's proxy and many
gateways), a sliding log started mid-window waits a whole window after each burst, where the
server would admit a full quota again at its next boundary. Once the boundary is learned
(:mod:`.shape`), this count paces to it.

``margin`` covers the time from admission here to arrival there (an admission within ``margin``
before a boundary may be counted by the server after it, so it counts in both windows), and
``skew`` how far the learned boundary may be off (an admission within ``skew`` after it may be
counted before it: it counts in both too, and a new window's burst goes ``skew`` after the
boundary). A boundary read from a reset is timed from our admission while the server counted
from the arrival, up to that request's way there later: its skew is that way (``doubt``: the
margin when the reset was read, narrowed by later readings, :func:`narrow`), not the margin in
force, which follows the recent requests' way there (a boundary read from an opening burst on
a cold network, 0.8 s on the way, stays that much early once the margin shrinks to the warm
requests': each later minute's burst went 0.75 s before the server's, 32 429s at 6x); the
margin when unknown (a boundary another process shared). A boundary on the wall
clock's minute (a server that gives no reset) is exact but for the skew of the two clocks
(:func:`skew`): a request admitted after it reaches the server after it, however long the way
(LiteLLM's proxy under a burst: seconds), so the next window's burst goes at once.

Given ``recent`` (ours admitted lately, each with the time its call ended:
:attr:`.log.Entry.answered`), the count of a window also holds ours admitted in the window
before it and still in flight at its boundary: a server that queues may count them there
(:mod:`.crossed`: unless answered too soon after it to have been). A
loaded proxy also writes its answers late (LiteLLM's with 1,024 in flight: 2-15 s after making
them), so answers that arrive after the boundary may have been made, and their requests
counted, before it: their ``remaining`` still falls with the old minute's count. The first
answer whose ``remaining`` is back up shows the new minute (:meth:`FixedCount.read`); ours
answered before it were counted before the boundary and are no longer carried into it
(:meth:`FixedCount.flipped`: written out in the order they were made, as one event loop does),
nor are ours sent before one it refused in the window before: its count was full then (a
proxy takes its queue in order). Takes ``now`` as an argument (no clock): tested directly."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from . import arrived, crossed

__all__ = ["CLOCK_SKEW", "FixedCount", "narrow", "skew"]

#: Seconds per minute of window our wall clock and a server's may disagree (NTP keeps them
#: within milliseconds; the least measured margin, ``latency.FLOOR``, is this much too).
CLOCK_SKEW = 0.05


def skew(margin: float, window: float, on_clock: bool, doubt: float | None = None) -> float:
    """Seconds a learned boundary may be off early, with ``margin`` seconds for the way to a
    server of ``window``-second windows: the clocks' skew for a boundary on the wall clock
    (``on_clock``; never more than the margin: ``margin=0`` counts at admission), else the
    ``doubt`` of the boundary (a reset counted from an arrival up to the way there after the
    admission it is timed from), at least the clocks' skew; the margin when not known."""
    clock = min(margin, CLOCK_SKEW * window / 60)
    if on_clock:
        return clock
    return margin if doubt is None else max(clock, doubt)


def narrow(epoch: float, doubt: float, window: float, boundary: float,
           way: float) -> tuple[float, float]:
    """``(epoch, doubt)`` of windows at ``epoch + i * window``, the server's boundary up to
    ``doubt`` s after, once a reading puts one at ``boundary`` or up to ``way`` s after (a reset
    timed from our admission, counted at an arrival at most ``way`` later): both ranges hold
    it, so where they meet. Ranges that miss each other (a reading off by more than its way
    there said) are both covered instead."""
    boundary -= round((boundary - epoch) / window) * window  # the one nearest ``epoch``
    low, high = max(epoch, boundary), min(epoch + doubt, boundary + way)
    if low > high:
        low, high = min(epoch, boundary), max(epoch + doubt, boundary + way)
    return low, high - low


class FixedCount:
    """Units admitted per fixed window, kept for the current and the next window only."""

    __slots__ = ("limit", "window", "margin", "epoch", "tokens", "counts", "recent", "rolled",
                 "on_clock", "carried", "seen", "flip", "reading", "doubt", "pending", "least",
                 "settles", "timed")

    def __init__(self, limit: int, window: float, margin: float, epoch: float,
                 tokens: bool, recent: Iterable[Any] | None = None,
                 on_clock: bool = False, doubt: float | None = None,
                 settles: bool = False) -> None:
        self.limit = limit  #: units per window (the learned limit, at most the quota)
        self.window = window  #: the server's window, seconds
        self.margin = margin  #: seconds an admission may take to arrive
        self.epoch = epoch  #: a window boundary (loop time)
        #: Seconds the server's boundary may lie after ``epoch`` (:func:`skew`; None: unknown).
        self.doubt = doubt
        self.tokens = tokens
        self.counts: dict[int, int] = {}
        #: Ours admitted lately (None: the server counts at arrival, nothing carried over).
        self.recent = recent
        #: The last window ours in flight were carried into.
        self.rolled: float = -math.inf
        #: The boundaries are the wall clock's (exact but for the clocks' skew: :func:`skew`).
        self.on_clock = on_clock
        #: Ours carried into window ``rolled`` (by id): in flight at its boundary; ``pending``
        #: those an answer may still let go, counted ``least`` s before it (:mod:`.crossed`).
        self.carried: dict[int, Any] = {}
        self.pending: list[Any] = []
        self.least = math.inf
        #: An answer soon after a boundary lets go of ours carried in flight (:mod:`.crossed`):
        #: a server learned to count per fixed window that says nothing (its ``remaining``
        #: shows no minute's start: :meth:`read`), from its answers' timing alone.
        self.settles = settles
        #: The last window whose start an answer showed (its ``remaining`` back up), when, and
        #: the last ``remaining`` read (:meth:`read`).
        self.seen, self.flip = -math.inf, -math.inf
        self.reading: int | None = None
        #: Ours whose answers timed their way there before a boundary their margin crosses
        #: (by id): counted only in the windows before it (:mod:`.arrived`).
        self.timed: dict[int, Any] = {}

    def index(self, t: float) -> int:
        return math.floor((t - self.epoch) / self.window)

    def boundary(self, index: int) -> float:
        """Loop time at which window ``index`` starts."""
        return self.epoch + index * self.window

    def skew(self) -> float:
        """Seconds past a boundary a request goes to be counted after it (:func:`skew`)."""
        return skew(self.margin, self.window, self.on_clock, self.doubt)

    def spans(self, t: float, reach: float | None = None) -> tuple[int, ...]:
        """The windows an admission at ``t`` counts in, counted by the server up to the skew
        before it (:func:`skew`) or ``reach`` s after it (default: the margin)."""
        first = self.index(t - self.skew())
        last = self.index(t + (self.margin if reach is None else reach))
        return (first,) if first == last else (first, last)

    def _weight(self, entry: Any) -> int:
        return entry.tokens if self.tokens else entry.live

    def rebuild(self, now: float, entries: Iterable[Any]) -> None:
        """Count ``entries`` (a log's, oldest first) into their windows."""
        self.counts, self.pending, self.timed = {}, [], {}
        self.rolled = math.inf  # carried once all are in
        for entry in entries:
            self.add(now, entry)
        self.rolled = -math.inf
        self._roll(now)

    def _roll(self, now: float) -> None:
        """Once per window, from its boundary on: ours in flight at it carried in, and let go
        once answered too soon after it (:func:`.crossed.roll`)."""
        if self.pending or self.index(now) > self.rolled:
            crossed.roll(self, now)

    def add(self, now: float, entry: Any) -> None:
        self._roll(now)
        counts = self.counts
        for index in arrived.counted(self, entry):
            counts[index] = counts.get(index, 0) + self._weight(entry)
        if len(counts) > 3:  # windows before the current one no longer matter
            current = self.index(now)
            for index in [i for i in counts if i < current]:
                del counts[index]
            if self.timed:
                arrived.forget(self, current)

    def adjust(self, entry: Any, tokens: int, live: int) -> None:
        """``entry`` counts ``tokens`` (and ``live``) from now on: in its windows, and in the
        one it was carried into while in flight (a refund of a call that never left, say
        queued for a concurrency slot across the boundary, gives that back too)."""
        delta = (tokens - entry.tokens) if self.tokens else (live - entry.live)
        indices = arrived.indices(self, entry)
        rolled = self.rolled
        if id(entry) in self.carried and rolled not in indices:
            indices = (*indices, rolled)
        for index in indices:
            if index in self.counts:
                self.counts[index] += delta

    def read(self, now: float, remaining: int) -> None:
        """The server's ``remaining`` in an answer read at ``now``: the first one up from the
        last (by more than a twentieth of the limit) since this window's boundary shows the
        server counting afresh (:meth:`flipped`). Until then answers may come from the
        minute before, written late; a count that fell too little to show it carries on."""
        current = self.index(now)
        last, self.reading = self.reading, remaining
        if self.seen < current and last is not None \
                and remaining > last + max(1, self.limit // 20):
            self.flipped(now)

    def flipped(self, now: float) -> None:
        """An answer read at ``now`` was made after this window's boundary: ours answered
        before it (in its instant too, read before it) were made, and counted, before the
        boundary (answers written in the order they were made): carried no more."""
        self._roll(now)
        current = self.index(now)
        self.seen, self.flip = current, now
        if self.rolled != current:
            return
        gone = [key for key, entry in self.carried.items() if entry.answered <= now]
        for key in gone:
            entry = self.carried.pop(key)
            if current in self.counts:
                self.counts[current] -= self._weight(entry)

    def vouch(self, now: float, at: float, counted: int) -> None:
        """The server counted ``counted`` in its window (its limit less what it said remained,
        read against ours since) as of a request of ours admitted at ``at``: no more of ours.
        Ours it did not count (refused by a 429 not of this quota) no longer fill the window:
        held, the window stayed full for a minute while the server said 7 remained. Only a
        request admitted a skew past the window's start surely counted in it. (From the
        server's own limit: LiteLLM's ``remaining`` counts to ``rpm`` where it admits
        ``rpm - 1``.)"""
        self._roll(now)
        current = self.index(now)
        if current in self.counts and self.index(at - self.skew()) == current:
            self.counts[current] = min(self.counts[current], counted)

    def stale(self, now: float, entry: Any) -> bool:
        """True when an answer to ``entry`` read at ``now`` may have been made in the window
        before (written late): ``entry`` was admitted there and no answer showed this
        window's start yet (:meth:`read`)."""
        current = self.index(now)
        return self.recent is not None and self.seen < current \
            and self.index(entry.time) < current

    def _room(self, index: int, need: int) -> bool:
        used = self.counts.get(index, 0)
        return used + need <= self.limit or used <= 0  # larger than a window: alone in one

    def fits(self, now: float, tokens: int) -> bool:
        self._roll(now)
        need = tokens if self.tokens else 1
        return all(self._room(index, need) for index in self.spans(now))

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` more fits: the skew past the start of the first window with
        room (then nothing admitted counts in a full window any more; ours in flight at
        that boundary, counted in it too, are known only there)."""
        self._roll(now)
        at, early = now, self.skew()
        for _ in range(4):
            blocked = [index for index in self.spans(at) if not self._room(index, need)]
            if not blocked:
                return at - now
            # a microsecond past it: float rounding must not leave it a hair inside the window
            at = self.boundary(max(blocked) + 1) + early + 1e-6
        return at - now

    def idle(self, now: float) -> bool:
        self._roll(now)
        current = self.index(now)
        return not any(used > 0 for index, used in self.counts.items() if index >= current)

    def available(self, now: float) -> int:
        self._roll(now)
        return self.limit - max(self.counts.get(index, 0) for index in self.spans(now))

    def __repr__(self) -> str:
        return f"<FixedCount limit={self.limit} per {self.window:g} s epoch={self.epoch:g}>"
