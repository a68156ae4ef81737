"""Ours carried into a learned fixed window while in flight at its boundary (:mod:`.fixed`),
and let go once their answers show the server counted them before it.

A server that queues counts a request when it takes it from its queue, not when it arrives
(LiteLLM's proxy: its router's per-minute counter is incremented by the pre-call check, which a
loaded proxy reaches tens of seconds after arrival), so a burst sent late in a window is counted
largely in the next one: ours admitted in the window before and still in flight at the boundary
count in the new window too (:func:`roll`).

But no server answers a request sooner after counting it than its work and the way back take:
at least ``least``, the fastest round trip of ours lately (admitted to answered) less the margin
(the most its way there took). A call that ended sooner than that after the boundary was
counted before it, and no longer fills the new window (:func:`settle`). Carried regardless, a
batch started at :56 against a server that says nothing and counts at arrival (32 sent at :56,
28 at :58, answered at :00 after a 2 s round trip) had the 28 fill the next minute, which sent
31 of its 60: the last calls went a minute late (1.91-1.92x the ideal from :56 and :57).

Only for a fixed window learned on a server that says nothing (``FixedCount.settles``): a
server that queues may make every one of ours wait, the fastest round trip too, and one whose
``remaining`` shows a minute's start shows which were counted before it
(:meth:`.fixed.FixedCount.flipped`); nor while a server that says nothing is paced within a
fixed window and a bucket (a first probe served by a sliding window, ours queued below
ConcurrencyLimit counted as sent: let go, 5 429s from :59). Everything here takes ``now`` as
an argument: tested directly."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["least", "roll", "settle"]


def roll(fixed: Any, now: float) -> None:
    """Once per window of ``fixed`` (a :class:`.fixed.FixedCount`), from its boundary on: ours
    admitted in the window before and in flight at the boundary (their call ended after it,
    or has not) count in it too; then those answered too soon after it to have been counted
    there are let go (:func:`settle`, again on later calls while some may still be)."""
    current = fixed.index(now)
    if current > fixed.rolled:
        fixed.rolled = current
        if fixed.recent is None:
            return
        start = fixed.boundary(current)
        # answered before the answer that showed this window's start: counted before it
        since = max(start, fixed.flip) if fixed.seen == current else start
        # a 429 in the window before (its count full): ours sent before it counted there
        full = max((e.seq for e in fixed.recent if e.refused and e.answered < start
                    and fixed.index(e.time) == current - 1), default=-1)
        fixed.carried = {id(entry): entry for entry in fixed.recent
                         if entry.live and entry.answered > since and entry.seq > full
                         and fixed.index(entry.time + fixed.margin) == current - 1}
        carried = sum(fixed._weight(entry) for entry in fixed.carried.values())
        if carried:
            fixed.counts[current] = fixed.counts.get(current, 0) + carried
        fixed.pending = [*fixed.carried.values()]
        # (not ``settles``: nothing let go, ``least`` below every answer's)
        fixed.least = least(fixed.recent, fixed.margin) if fixed.settles else -math.inf
    settle(fixed, now)


def least(recent: Any, margin: float) -> float:
    """Seconds at least from the server counting one of ours to its answer here: the fastest
    round trip of ``recent`` (ours answered, neither refunded nor refused: a 429 does no
    work) less ``margin``; ``inf`` while none was answered (each carried one's own then)."""
    trips = [e.answered - e.time for e in recent
             if e.live and not e.refused and e.answered < math.inf]
    return max(0.0, min(trips) - margin) if trips else math.inf


def settle(fixed: Any, now: float) -> None:
    """Let go of ours carried into ``fixed``'s current window (``pending``: in flight when it
    was rolled) whose calls ended within ``least`` of its boundary (their own round trip the
    fastest yet: within it, ``least`` from then on); once ``least`` has passed since the
    boundary, no answer shows more (those still in flight stay carried)."""
    window = fixed.rolled
    start = fixed.boundary(window)
    flying = []
    for entry in fixed.pending:
        if entry.answered == math.inf:
            flying.append(entry)
            continue
        if entry.live and not entry.refused:
            fixed.least = min(fixed.least, max(0.0, entry.answered - entry.time - fixed.margin))
        if entry.live and entry.answered - fixed.least <= start \
                and fixed.carried.pop(id(entry), None) is not None and window in fixed.counts:
            fixed.counts[window] -= fixed._weight(entry)
    fixed.pending = flying if now - fixed.least <= start else []
