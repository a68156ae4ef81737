"""A burst answered together shows the give-back (:mod:`.giveback`) in a few readings.

:meth:`.giveback.GiveBack.read` judges a span once the unused output given back in it is large
against ours that may be on the way at either end: twice the largest request and the slack at
least. A small burst (twelve calls of 400 against 2,000 a minute) never gives that much in a
span, so ``max_tokens`` stayed charged and the burst went at the refill's pace (85 s).

A tighter bound holds on the side that matters. On a bucket keeping ``max_tokens`` charged,
``remaining`` rises between two readings by its refill only (``rate``, the faster of its own
and our quota's; a clock slack for the answers' way back), less what was charged: the residual
over our count exceeds the slack only by ours admitted after the earlier reading and not
charged yet, and a request answered was charged. So ours admitted since the earlier reading
and not answered (``pending``) bound it, whatever their send latency; other clients only lower
it. While a burst is answered nothing of ours is admitted (ours kept charged, the bucket is
empty): a rise of about the unused output that ended, above that bound, shows the give-back.
Headers are read before their answer's usage, so a span's rise holds its last answer's unused
output and our count its first's: the rise may exceed our count by one answer (``largest``).

What else raises a reading, and how it is told apart:

- a gateway counting per clock minute (no refill) starts its count afresh at each boundary: a
  span a boundary may lie in shows nothing (the server's time on a reading is up to
  ``spread`` before it is heard, and after its request was admitted);
- a reading older than the one before it (answers come back out of order) misses charges
  between the two: it rises, and the reading after it drops as much. So two spans shown within
  ``horizon`` are confirmed by another answer's reading, within a window, not dropping below
  the one shown (a drop voids them) before they decide. With nothing of ours admitted since
  the first span shown, no reading can have missed a charge of ours: a drop heard within
  ``spread`` of the reading shown is then an answer older than it, shuffled on the way back
  (a wave of 15 answered within 10 ms: its 2,140 then 1,188 voided what was shown, and the
  give-back went unjudged), and tells nothing either way.

A stream's headers come as it starts (``started``): they show the server as its request was
admitted, neither ours admitted after it nor the answers ended since. Such a reading is
compared as of then: ours issued, unused output given back and admissions counted at its
admission (read as of the reading, the answers ended meanwhile counted given where the server
showed none, and ours in flight with it bounding the rise: a burst of streams never showed its
give-back, and every stream's unused output stayed held back, 10 tokens of room where the
server had 19,975).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Burst"]


class Burst:
    """Ours admitted and not answered (``open``: ``id(entry)`` to ``(seq, admitted at,
    output, entry, issued, given)``, the last two ``GiveBack``'s then; ``seq`` counts
    admissions), the earlier reading (``anchor``: time, remaining, ours issued and unused
    output given back by then, ``seq``, the earliest the server's time on it can be), and the
    spans shown giving back (``shown`` of them since ``since``, the last in the answer to
    ``by``)."""

    __slots__ = ("open", "seq", "anchor", "shown", "since", "by", "window", "last", "quiet")

    def __init__(self, window: float) -> None:
        #: Seconds an admission stays open at most (by then it reached the server).
        self.window = window
        self.open: dict[int, tuple[int, float, int, Any, int, int]] = {}
        self.seq = 0
        self.anchor: tuple[float, int, int, int, int, float] | None = None
        self.shown, self.since, self.by = 0, 0.0, None
        #: Admissions counted (``seq``) as the first span shown began: none since, a reading
        #: below the one shown, heard within ``spread`` of it, may be older than it.
        self.quiet = -1
        #: The request of the last reading heard in its answer, and its admission.
        self.last: tuple[Any, float] = (None, 0.0)

    def admitted(self, now: float, output: int, entry: Any, issued: int = 0,
                 given: int = 0) -> None:
        """Ours reserved ``output`` at ``now`` (``entry``; None: one never told answered),
        ``issued`` and ``given`` by then (``GiveBack``'s, this one counted)."""
        self.seq += 1
        entry = object() if entry is None else entry
        open_ = self.open
        open_[id(entry)] = (self.seq, now, output, entry, issued, given)  # (its id not reused)
        while (first := next(iter(open_.items())))[1][1] < now - self.window:
            del open_[first[0]]

    def closed(self, entry: Any) -> None:
        """The request of ``entry`` was never charged (never sent, or refused)."""
        if entry is not None:
            self.open.pop(id(entry), None)

    def answered(self, entry: Any, unused: int) -> None:
        """The request of ``entry`` ended, ``unused`` of its output not used. An answer that
        reports less than it reserved was served, so charged; one that does not may be an
        error of a request that never reached the server: it stays open (the bound wider)
        until a window has passed."""
        if unused > 0:
            self.closed(entry)

    def read(self, back: Any, now: float, remaining: int, rate: float, wall: float | None,
             entry: Any = None, started: bool = False) -> bool:
        """A reading of the server's output ``remaining`` (refilling ``rate`` a second) at
        ``now`` (``wall`` by the wall clock), in the answer to ``entry`` if known (``started``:
        as its stream started), for ``back`` (a :class:`.giveback.GiveBack`): True when it
        confirms two spans shown giving back within ``horizon``."""
        issued, given, spread, horizon = back.issued, back.given, back.spread, back.horizon
        # the server's time on it: up to ``spread`` before now, and after its request's
        # admission (a burst started at :00 is answered in the minute it was sent; an
        # answer's headers may be read again once it ended)
        seq, upto, moment = self.seq, math.inf, now
        if entry is not None and (own := self.open.get(id(entry))) is not None:
            self.last = (entry, own[1])
            if started:  # a stream's: as of its admission, itself charged there
                seq, moment, _, _, issued, given = own
                upto = seq
        admitted = self.last[1] if entry is not None and entry is self.last[0] else -math.inf
        stamp = max(now - spread, admitted)
        here, anchor = (moment, remaining, issued, given, seq, stamp), self.anchor
        wall, period = now if wall is None else wall, back.minute.period
        # too old (but for the reading that confirms: within a window), or a clock minute's
        # boundary may lie between the two readings: start anew
        if anchor is None or anchor[0] < now - (self.window if self.shown == 2 else horizon) \
                or (wall - (now - min(anchor[5], stamp))) // period != wall // period:
            self.anchor, self.shown = here, 0
            return False
        at, before, issued_then, given_then, since, _ = anchor
        given -= given_then
        residual = remaining - (before + rate * (moment - at) - (issued - issued_then))
        slack = rate * spread  # the answers' way back: up to ``spread`` of refill off
        if residual < -slack:  # a drop: what was shown may have been a reading out of order
            if self.shown and self.quiet == self.seq and now - at <= spread:
                return False  # or this one is, older than the one shown: it tells nothing
            self.shown = 0
            return False
        if self.shown == 2 and entry is not None and entry is not self.by \
                and residual - self._pending(since, upto) >= -slack:
            return True  # another answer's reading: no drop, even if ours were all charged
        if given <= 0 or residual <= slack + given / 2:
            return False  # the span goes on
        high = slack + self._pending(since, upto)
        if not high + given / 2 < residual <= high + given + back.largest:
            return False  # beyond a give-back by one answer's: not one either
        self.anchor, self.by = here, entry
        if self.shown and self.since >= now - horizon:
            self.shown = 2
        else:
            self.shown, self.since, self.quiet = 1, at, since
        return False

    def _pending(self, seq: int, upto: float) -> int:
        """Output of ours admitted after admission ``seq``, before ``upto``, not answered yet."""
        return sum(output for after, _, output, *_ in self.open.values() if seq < after < upto)
