"""A lesson one 429 suggests, kept apart until a second 429 at the same place confirms it
(issue 30: a 429 the quota did not cause is no fact about the quota).

A 429 after ``used`` of ours in the server's window reads "the server admits ``used``"
(:func:`.refusal.learn_limit`); from a server that says nothing, one within what a learned
fixed clock minute admits reads "not a fixed window" (:mod:`.learn_refusal`), one on tokens
far under the limit as counted "it charges more than we count". A 429 the quota did not
cause (a provider's own overload: 5 % of requests under 10x demand, asking 2 s; OpenAI and
gateways answer "server busy" with ``retry-after: 2``) reads the same: under a saturated pace
every 429 comes near the limit. Taken at its word, one to a request among the last tenth of
a learned fixed window's burst made every later minute admit 57 of 60 (56 s idle a minute
with room, 1.12x), one lowered a silent fixed window's 60 to 54 after the server had served
60 in a minute, another made it a sliding log (36 s idle a minute), one to the 9th of a
burst read as a factor of 3.

So such a lesson is only doubted, its pause honoured, and learned when it is **repeated**: a
429 to a request of ours sent after the first was heard (two of a burst refused at once are
one, at the furthest of their places), in the same window, at the same place (less the
request's units at most: a stray 429 may land anywhere below it, the retry of one refused
lands there again). Unless the server showed it admits more since: it served one of ours
beyond that place (:func:`served_beyond`), or its latest reading in the window left room
for the refused one (:func:`room`: the retry of a request refused at random, refused at
random again, confirms nothing), or, on tokens, the first's own pause promised it room
(:func:`promised`: the same retry, from a server that says nothing). One record per track
(:class:`Heard` per lesson); each case says only when it needs no repeat
(:func:`.refusal.learn_limit`): a 429 whose pause reaches a learned fixed window's boundary,
or asks none, is the window's own; one from a server that says nothing asking longer than a
bucket refills is no overload's.

A learned token bucket with readings needs no repeat: it only gains room after a reading,
so room its latest one left (refilled since) is there still, and a 429 without it is its
quota's (read as limits, an overloaded server's random 429s took a 10,000-token bucket to
9,103 in two minutes). Everything here takes ``now`` as an argument (no clock, no asyncio).
"""

from __future__ import annotations

import math
from typing import Any

from .shape import TOLERANCE

__all__ = ["Heard", "boundary", "foreign", "heard", "limit", "promised", "read", "room",
           "served_beyond"]


class Heard:
    """The first 429 of a lesson not yet confirmed: in the window ending at ``end`` (None:
    any within a window's length of it), after ``low`` to ``high`` of ours (a burst's
    places), to the entry ``seq`` estimated at ``estimate``, heard at ``at``, asking a pause
    until ``until`` (None: not told)."""

    __slots__ = ("end", "low", "high", "seq", "at", "estimate", "until")

    def __init__(self, end: float | None, used: int, ticket: Any, at: float,
                 until: float | None = None) -> None:
        self.end, self.low, self.high, self.seq, self.at = end, used, used, ticket.seq, at
        self.estimate, self.until = getattr(ticket, "estimate", 1), until


def boundary(window: Any, at: float) -> float | None:
    """The end of the learned fixed window ``at`` counts in; None for another shape (a
    bucket's or a sliding window's limit 429s may ask short pauses; an unknown shape's 429s
    teach it, the probes of a server that says nothing too)."""
    shape = window.shape
    if shape.kind == "fixed" and shape.epoch is not None:
        return shape.next_boundary(shape.epoch, at)
    return None


def foreign(window: Any, ticket: Any, until: float, bare: bool) -> float | None:
    """The end of the learned fixed window of ``ticket`` when its 429, asking a pause until
    ``until`` (``bare``: it asked none), may not be its quota's: the pause ends before the
    window could have room again. None: the window's own pause (or one that says nothing)."""
    end = None if ticket is None or bare else boundary(window, ticket.time)
    return None if end is None or until >= end - TOLERANCE else end


def heard(window: Any, track: Any, lesson: str, used: int, ticket: Any, now: float,
          end: float | None = None, until: float | None = None) -> bool:
    """True when the 429 at ``now`` to ``ticket``, after ``used`` units of ours in
    ``track``'s window (the learned fixed window ending at ``end``; None: the window up to
    it), asking a pause until ``until`` (kept for :func:`promised`), repeats the one that
    suggested ``lesson`` (the module's doc). Else it is kept as the first, unless it was
    sent with it (a burst's 429s count as one)."""
    first = track.repeats.get(lesson)
    if first is not None and not _same(first, end, now, track.window):
        first = None  # another window's
    if first is not None and ticket.time <= first.at:  # sent before the first was heard
        first.low, first.high = min(first.low, used), max(first.high, used)
        return False
    need = ticket.tokens if track.quota.tokens else 1
    if first is not None and first.low - need <= used <= first.high \
            and not served_beyond(window, track, first.high, first.seq) \
            and not room(track, ticket, end) and not promised(track, first, ticket):
        del track.repeats[lesson]
        return True
    track.repeats[lesson] = Heard(end, used, ticket, now, until)
    return False


def limit(window: Any, track: Any, now: float, ticket: Any, used: int,
          pause: tuple[float, bool], sure: bool) -> bool:
    """True when the 429 to ``ticket``, heard at ``now`` after ``used`` of ``track``'s units
    in its window, asking a pause until ``pause[0]`` (``pause[1]``: it asked none; ``sure``:
    longer than a bucket refills), shows the server admits ``used`` now: at once when no case
    of the module's doc doubts it, else once repeated."""
    if ticket is None:
        return True
    shape = window.shape
    if shape.kind == "bucket" and room(track, ticket, math.inf):
        return False  # a bucket's reading left room: not its quota's
    if foreign(window, ticket, *pause) is None and (shape.quiet is False or sure):
        return True  # the window's own pause, from a server that tells its counts
    return heard(window, track, "limit", used, ticket, now, boundary(window, ticket.time))


def _same(first: Heard, end: float | None, now: float, length: float) -> bool:
    """True when a 429 heard at ``now`` in the window ending at ``end`` (None: a window's
    ``length`` of time) is in ``first``'s window."""
    if end is None and first.end is None:
        return now - first.at <= length
    return end is not None and first.end is not None and abs(first.end - end) <= 1e-6


def room(track: Any, ticket: Any, end: float | None) -> bool:
    """True when the server's latest reading in the window ending at ``end`` (a learned
    bucket's: ``inf``) left room for ``ticket``: what it said remained, less ours admitted
    after the one read and before ``ticket`` (ours its count grew by, those it refused
    aside). Read against our own count instead, the place of a request refused at random was
    4 over the server's (ours refused in the window counted), and its retry, refused at random
    again while the server said 5 remained, confirmed "the server admits 59"."""
    reading = track.reading
    if reading is None or end is None or abs(reading[0] - end) > 1e-6:
        return False
    _, seq, remaining, at = reading
    if track.shape.kind == "bucket":  # refilled since, at the rate it paces to
        remaining += (ticket.time - at) * track.limit / track.window
    since = sum(track.weight(e) for e in track.recent
                if seq < e.seq < ticket.seq and e.live and not e.refused)
    return remaining - since >= (ticket.tokens if track.quota.tokens else 1)


def promised(track: Any, first: Heard, ticket: Any) -> bool:
    """True when the pause the first 429 asked promised room for ``ticket`` on ``track``'s
    token quota: sent once it ended, it needs no more than the first's request, less ours
    admitted between the two (whatever the server charges over our estimates, it charges
    them alike). Had the first been its quota's, the server would have served it; one of
    the two was no quota's, so they confirm nothing. Read as a repeat, the retry of a probe
    refused at random, refused at random again, kept a silent bucket's guessed factor (1.12x
    where it charges our estimate: 1.15x the ideal)."""
    if not track.quota.tokens or first.until is None or ticket.time < first.until - TOLERANCE:
        return False
    between = sum(e.estimate for e in track.recent
                  if first.seq < e.seq < ticket.seq and e.live and not e.refused)
    return ticket.estimate + between <= first.estimate


def read(window: Any, learners: list[Any], ticket: Any, at: float, remaining: int) -> None:
    """A reading says the server had ``remaining`` of ``learners``' units left as it counted
    ``ticket``, admitted at ``at``: kept for :func:`room`, the latest one of each window (of
    a learned fixed window, or the one of a learned bucket)."""
    end = boundary(window, at)
    end = math.inf if end is None and window.shape.kind == "bucket" else end
    if end is None or ticket is None:
        return
    for track in learners:
        kept = track.reading
        if kept is None or abs(kept[0] - end) > 1e-6 or kept[1] <= ticket.seq:
            track.reading = (end, ticket.seq, remaining, at)


def served_beyond(window: Any, track: Any, count: int, since: int) -> bool:
    """True when the server served one of ours admitted after the entry ``since`` (a seq)
    with more than ``count`` units of ours before it in its window (the clock minute it was
    sent in, on a fixed window learned; else the window up to it), itself included."""
    shape = window.shape
    fixed = shape.kind == "fixed" and shape.epoch is not None
    counted = [e for e in track.recent if e.live and not e.refused]  # (two windows)
    for entry in counted:
        if entry.seq <= since or entry.answered == math.inf:
            continue
        start = shape.next_boundary(shape.epoch, entry.time) - shape.window if fixed \
            else entry.time - track.window
        if sum(track.weight(e) for e in counted
               if start <= e.time and e.seq <= entry.seq) > count:
            return True
    return False
