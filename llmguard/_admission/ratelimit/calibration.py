"""The charge factor a burst's token readings measure (:mod:`.charge`, ``refill="auto"``).

A burst of ours reaches the server within a moment, and each answer's ``remaining`` counts the
ones that arrived before it: the highest and lowest readings of a burst differ by the charges
of all but the first to arrive, less what the server gave back meanwhile. A bucket's refill is
known (its rate) and added back; ours leaving a sliding window are not: in a paced stream
(answers 0.05 s away, 32-64 calls in flight, a minute on) a group of ~3 readings differs by
about what left the window. Read anyway, the factor swung between 1.0 and 3.0 for the whole run
against a server charging exactly the estimate. Such a group measures nothing; the factor
measured before any of ours could leave the window holds.

Everything here takes numbers (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["measure", "unread"]


def measure(burst: list[Any], spread: float, remaining: int, ticket: Any, rate: float,
            now: float = 0.0, start: float = -math.inf,
            horizon: float = -math.inf, recent: Any = (),
            most: float = math.inf) -> float | None:
    """Add a reading of ``remaining`` in the answer to ``ticket`` (heard ``now``) to ``burst``
    (``[anchor send time, [(remaining, entry), ...], first heard]``, changed in place) and
    return what the server charges over our estimates, or None when it does not tell.

    Ours sent within ``spread`` s of the first of a burst are read together; ``rate``: tokens
    a second the server refills meanwhile (a bucket's). ``start``: the learned fixed window's
    start as of this reading (or the supposed one, once past it); a burst whose first
    reading was heard before it is read anew. A server counting answers (LiteLLM's proxy's
    headers) reports a queued burst partly in the next minute, afresh: read with the earlier
    readings, that calibrated 1.0 for a 1.11x charge (3 429s at :45-:55 in the strict table).
    ``horizon``: ours admitted before it may have left the server's (sliding) window by now,
    giving back what the group would read.

    The first to arrive is the highest reading once the refill is taken out (``remaining -
    rate * sent``), not the highest as read: two of ours 0.05 s apart at 5,000 tokens a second
    read 491 then 492, and the later one taken as the first read a 1.11x charge as 0.56.
    ``recent``: ours admitted lately, in order (a deque). One of them in flight, sent amid the
    group's readings and not read yet, is in the drop between them but not in our estimates:
    what the group reads is only a bound from above until it is read (answers of one instant
    come in any order: a paced stream read a 1.11x charge as 1.67x, one amid the readings
    unread), returned only when below ``most`` (the factor in force: it may come down)."""
    anchor, readings, heard = burst
    if anchor is None or abs(ticket.time - anchor) > spread or heard < start:
        if anchor is not None and ticket.time < anchor:
            return None  # an older burst's answer
        readings = []
        burst[:] = [ticket.time, readings, now]
    readings.append((remaining, ticket))
    # a reading of 0 is a floor (at least that much spent), not a count: it read a
    # 1.11x charge as 1.0 (the spread of the last ones cut short)
    counted = [(r, e) for r, e in readings if not e.refused and r > 0]
    if len(counted) < 3:  # a pair in a paced stream spans a refill that dwarfs a charge
        return None
    # ``remaining - rate * sent``: what the server held less its refill (a bucket's level
    # at time 0 less what it charged by then), falling with each arrival
    first = max(counted, key=lambda item: item[0] - rate * item[1].time)
    last = min(counted, key=lambda item: item[0] - rate * item[1].time)
    if min(e.first for _, e in counted) <= horizon:
        return None  # ours that left the window gave back an unknown part of what it read
    spent = first[0] - last[0] + rate * (last[1].time - first[1].time)
    estimated = sum(e.estimate for _, e in counted) - first[1].estimate
    if estimated <= 0:
        return None
    measured = spent / estimated
    if measured >= most and recent and unread(recent, readings):
        return None
    return measured


def unread(recent: Any, readings: list[Any]) -> bool:
    """True when one of ``recent`` (ours in admission order) sent amid ``readings``' tickets
    (by the last one's send at the latest) is still in flight with no reading among them.
    One admitted and still queued below us (an opening burst's beyond ConcurrencyLimit's
    slots: marked so, :mod:`.queued`) is not sent: it blocks nothing."""
    read = {id(e) for _, e in readings}
    low = min(e.seq for _, e in readings)
    latest = max(e.time for _, e in readings)  # (one sent at that instant may arrive first)
    for entry in reversed(recent):  # from the newest: only the group's span is walked
        if entry.seq <= low:
            return False
        if entry.time > latest:
            continue
        if (not entry.queued and entry.live and not entry.refused
                and entry.answered == math.inf and id(entry) not in read):
            return True
    return False
