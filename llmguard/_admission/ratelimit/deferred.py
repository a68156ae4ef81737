"""A 429 to one of a burst, read once the burst is answered (#30). Ours sent within ``spread``
of the refused one may reach the server in any order: at the 429 its place among them is not
known. Read by admission (:func:`.refusal.before`: ours admitted after it not seen), LiteLLM's
proxy refusing the 60th to arrive, the 24th of a burst of 32 sent together at :118, was seen
51 of 60: nothing learned, a second 429 in the next minute. Counted as seen at once, a stray
429 to a burst's third reads "the server admits 57". Once the rest of the burst is answered,
those the server served came before the refused one (a count that refused it refuses those
after it too): the lesson waits for them, and counts those served.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import repeat
from .auto import AutoTrack

#: The key of a lesson waiting for its burst in ``AutoTrack.repeats``.
KEY = "burst"
#: Lessons waiting in any window: none, and an answer costs one look (every call is answered).
waiting = 0

__all__ = ["KEY", "answered", "defer"]


def defer(window: Any, track: AutoTrack, ticket: Any, used: int, needed: int,
          pause: tuple[float, bool], sure: bool, near: int) -> bool:
    """True when the 429 to ``ticket`` (``used`` of ``track``'s units seen before it by
    admission, ``needed`` its own) waits for ours sent with it and after it, still in flight,
    that would bring the count within ``near`` of the quota (and not past the limit in force)
    if served: kept on ``track`` until they are answered (:func:`answered`). Only from a server
    that tells its counts, or after a pause longer than a bucket refills (``sure``: LiteLLM's
    60 s): a silent server's stray 429s asking 2 s, read so in bursts, taught "admits 54"."""
    if not sure and window.shape.quiet is not False:
        return False
    burst = ticket.time + window.readings.spread
    others = [e for e in track.log.entries if e.seq > ticket.seq and e.time <= burst
              and e.live and not e.refused and e.answered == math.inf]
    units = sum(track.weight(e) for e in others)
    configured = track.quota.limit
    if not others or used + units + needed > track.limit \
            or used + units < configured - near:
        return False
    global waiting
    waiting += KEY not in track.repeats
    track.repeats[KEY] = (ticket, others, used, needed, pause, sure, near)
    return True


def answered(window: Any, now: float, entry: Any, live: int) -> None:
    """``entry`` was answered (``live``: 0 when refunded, its count not updated yet): a lesson
    whose burst is all answered now is learned, counting those of it the server served (not
    refused, not refunded) as seen before the refused one."""
    global waiting
    if window.shape is None:
        return
    for track in window.tracks:
        pending = track.repeats.get(KEY) if isinstance(track, AutoTrack) else None
        if pending is None:
            continue
        ticket, others, used, needed, pause, sure, near = pending
        if any(e.answered == math.inf and e.live for e in others):
            continue
        del track.repeats[KEY]
        waiting -= 1
        seen = used + sum(track.weight(e) for e in others
                          if e.live and not e.refused and (e is not entry or live))
        configured = track.quota.limit
        if seen + needed > track.limit or seen < configured - near \
                or not repeat.limit(window, track, now, ticket, seen, pause, sure):
            continue
        for peer in window.tracks:
            if isinstance(peer, AutoTrack) and peer.learns() \
                    and peer.quota.tokens is track.quota.tokens:
                peer.set_limit(now, seen)
        unit = "tokens" if track.quota.tokens else "requests"
        window.shape.limits = (f"; a 429 after {seen} {unit} in the window (its burst "
                               f"answered): the server admits {seen}")
