"""A lower limit one 429 suggested, kept apart until the server confirms it (issue 30: a 429
the quota did not cause is no fact about the quota).

A 429 after ``k`` of ours in a window reads as "the server admits ``k``" (:func:`.refusal.
learn_limit`). When the pause it asks ends before a learned fixed window's boundary, the server
itself says it will admit sooner: a full window would not. Such a 429 is an overloaded
server's as often (OpenAI and gateways answer "server busy" 429s with ``retry-after: 2``;
while the shape is unknown its 429s are read as before: they teach it), and learned at once
one to a request among the last tenth of a minute's burst made every later minute admit 57
of 60: the provider idle 56 s a minute with room, 1.12x the ideal. So the limit is only
suspected (:class:`Suspect`, kept per track) and learned when a second 429 confirms it: one
to a request of ours sent after the first was heard, in the same window, at the same place
or sooner (a lower limit refuses the retry again; a random 429 lets it in), unless the
server's latest reading in the window (:func:`read`) left room for it: the retry of a request
refused at random, refused at random again, confirms nothing. (A server whose headers count
to a limit it does not enforce, asking a short pause, is then refused every pause until its
boundary: no 429 may override its headers without random 429s doing so too, a retry refused
three times at 5 % held a minute as full in one run of five.)

A bare 429 (no retry-after: ``DEFAULT_PAUSE``) or a pause reaching the boundary is the
window's own, learned at once as before. A learned token bucket's 429 teaches a lower limit
unless its latest reading, refilled since, left room for the refused request (a bucket only
gains room after a reading): read as limits, an overloaded server's random 429s took a
10,000-token bucket to 9,103 in two minutes. Everything here takes ``now`` as an argument.
"""

from __future__ import annotations

import math
from typing import Any

from .shape import TOLERANCE

__all__ = ["Suspect", "confirmed", "foreign", "read"]


class Suspect:
    """A lower limit suspected in the window ending at ``end``: ``place`` (ours the server
    had seen before the refused one, the furthest of a burst's; None: none suspected) and
    ``heard`` (when the last 429 at it came); ``read``, ``(seq, remaining, at)`` of the
    latest of ours a reading in the window described, admitted at ``at`` (None: none)."""

    __slots__ = ("end", "place", "heard", "read")

    def __init__(self, end: float) -> None:
        self.end, self.place, self.heard = end, None, math.inf
        self.read: tuple[int, int, float] | None = None


def _record(track: Any, end: float) -> Suspect:
    """``track``'s record of the window ending at ``end`` (a new one for a new window)."""
    record = track.suspect
    if record is None or abs(record.end - end) > 1e-6:
        record = track.suspect = Suspect(end)
    return record


def _boundary(window: Any, at: float) -> float | None:
    """The end of the learned fixed window ``at`` counts in; None for another shape (a
    bucket's or a sliding window's limit 429s may ask short pauses; an unknown shape's 429s
    teach it, the probes of a server that says nothing too)."""
    shape = window.shape
    if shape.kind == "fixed" and shape.epoch is not None:
        return shape.next_boundary(shape.epoch, at)
    return None


def _key(window: Any, at: float) -> float | None:
    """Which record a reading for one of ours admitted at ``at`` goes to: its window's
    (:func:`_boundary`), the one record of a learned bucket (``inf``), else None."""
    end = _boundary(window, at)
    return math.inf if end is None and window.shape.kind == "bucket" else end


def _room(track: Any, record: Suspect, ticket: Any) -> bool:
    """True when the server's latest reading in the window left room for ``ticket``: what it
    said remained, less ours admitted after the one read and before ``ticket`` (ours its
    count grew by, those it refused aside). Read against our own count instead, the place
    of a request refused at random was 4 over the server's (ours refused in the window
    counted), and its retry, refused at random again while the server said 5 remained,
    confirmed "the server admits 59"."""
    if record.read is None:
        return False
    seq, remaining, at = record.read
    if track.shape.kind == "bucket":  # refilled since, at the rate it paces to
        remaining += (ticket.time - at) * track.limit / track.window
    since = sum(track.weight(e) for e in track.recent
                if seq < e.seq < ticket.seq and e.live and not e.refused)
    return remaining - since >= (ticket.tokens if track.quota.tokens else 1)


def foreign(window: Any, ticket: Any, until: float, bare: bool) -> float | None:
    """The end of the window of ``ticket`` when its 429, asking a pause until ``until``
    (``bare``: it asked none), may not be its quota's: the pause ends before the window
    could have room again. None: the window's own pause (or one that says nothing)."""
    end = None if ticket is None or bare else _boundary(window, ticket.time)
    return None if end is None or until >= end - TOLERANCE else end


def confirmed(window: Any, track: Any, now: float, ticket: Any, used: int, until: float,
              bare: bool) -> bool:
    """True when the 429 to ``ticket``, heard at ``now`` asking a pause until ``until``
    (``bare``: it asked none), after ``used`` of ``track``'s units in its window, shows the
    server admits ``used`` (the module's doc)."""
    if window.shape.kind == "bucket" and ticket is not None:
        # a bucket only refills after a reading: room it left is there still
        return not _room(track, _record(track, math.inf), ticket)
    end = foreign(window, ticket, until, bare)
    if end is None:
        return True
    record = _record(track, end)
    if record.place is not None and ticket.time < record.heard:  # sent with the one that
        record.place = max(record.place, used)  # struck last: a burst's 429s count as one
        return False
    again = record.place is not None and used <= record.place
    if again and not _room(track, record, ticket):
        record.place = None
        return True
    record.place, record.heard = record.place if again else used, now
    return False


def read(window: Any, learners: list[Any], ticket: Any, at: float, remaining: int) -> None:
    """A reading says the server had ``remaining`` of ``learners``' units left as it counted
    ``ticket``, admitted at ``at``: kept for
    :func:`confirmed`, the latest one of each window."""
    end = _key(window, at)
    if end is None or ticket is None:
        return
    for track in learners:
        record = _record(track, end)
        if record.read is None or record.read[0] <= ticket.seq:
            record.read = (ticket.seq, remaining, at)
