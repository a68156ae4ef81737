"""What a 429 from a server that says nothing teaches once it is confirmed, not at once.

A server that sends no rate-limit header tells its limit only by refusing: a 429 after
``used`` of ours in its window reads "it admits ``used``" (:func:`.refusal.learn_limit`), one
within what a learned fixed clock minute admits reads "not a fixed window"
(:mod:`.learn_refusal`), one on tokens far under the limit as counted reads "it charges more
than we count". A 429 the quota did not cause (a provider's own overload, 5 % of requests
under 10x demand) reads the same: under a saturated pace every 429 comes near the limit, and
taken at its word one lowered a fixed window's 60 to 54 after the server had served 60 in a
minute (52 s idle with room, where it asked for 2 s), another one made the fixed window a
sliding log (36 s idle a minute), one to the 9th of a burst read as a factor of 3. So the
first such 429 is only doubted, its pause honoured; a second one at the same count (the
retry of the one refused) confirms it, unless the server served one of ours beyond that count
in between (it admitted more than the lesson says: the doubt was a stray 429).

Everything here takes the log as it is (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["confirmed", "served_beyond"]


def confirmed(window: Any, track: Any, lesson: str, used: int, ticket: Any,
              now: float) -> bool:
    """True when a 429 at ``now`` to ``ticket`` after ``used`` units of ours in ``track``'s
    window confirms ``lesson`` (``"limit"``, ``"shape"``, ``"factor"``) doubted by one within
    the window before: ``ticket`` sent after that one came back (two of a burst refused at
    once are no repetition), at that one's count (less ``ticket``'s units at most: a stray
    429 may land anywhere below it, the retry of one refused lands there again), and none of
    ours served beyond that count since. Else this one is the doubt now."""
    doubts = track.doubted
    prior = doubts.get(lesson)
    doubts[lesson] = (used, ticket.seq, now)
    need = ticket.tokens if track.quota.tokens else 1
    if prior is None or not prior[0] - need <= used <= prior[0] or ticket.time <= prior[2] \
            or now - prior[2] > track.window:
        return False
    return not served_beyond(window, track, prior[0], prior[1])


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

