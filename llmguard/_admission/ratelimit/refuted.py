"""A token bucket refuted by what a server that says nothing served and refused (:mod:`.silent`):
a 429 (to a request of ours, not a probe's) no bucket that admitted our probes could give.

Once a 429 kept the charge factor (:mod:`.charge`, ``kept``) above the least it showed
(``Charge.least``), a probe beyond the bucket at that factor, served, is served alike by a
fixed clock minute with room and by a bucket charging a little less (a bucket charging 1.11x
at :00, the factor kept at 1.1184x: taken for a fixed window, its burst at the switch drew 3
more 429s). Read as a bucket's (:func:`.apart.cheaper`), a fixed window charging 1.11x from
:55 was paced within both: 1.22x the ideal. What tells them apart is already at hand: each
probe served bounds the factor a bucket of the quota may charge from above (``ceiling``:
:func:`.bounds.bucketed`, ours sent after it left out: the bound only loosens), each 429 from
below (``floor``: the least factor at which a bucket, full at most, must refuse it, ours sent
up to the margin after it counted before it, its refill only to when it was sent). A floor
above the ceiling: no bucket gave both, a fixed window did (the one at :55: 429 floor 1.13x,
a probe served at 1.111x); else the bucket stays possible.

Everything here takes numbers and entries (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from .auto import AutoTrack
from .bounds import bucket_of, bucketed
from .charge import MOST

__all__ = ["bucketless", "clockless", "outpaced", "refused", "roomy", "served", "slideless"]


def served(window: Any, probe: Any) -> None:
    """``probe`` was served: a bucket of the quota charges at most what admitted it, ours
    arriving at any moment their way there allows (``ceiling``: what refutes a bucket), or
    as late as it allows, as a bucket is paced (``paced``: :mod:`.holds`)."""
    charge = window.charge
    bound = bucketed(window, probe, rounded=False) if charge is not None else 0.0
    if bound > 0.0:
        charge.ceiling = min(charge.ceiling, bound)
        charge.paced = min(charge.paced, bucketed(window, probe, rounded=False, late=True))
        for track in window.tracks:  # (a bucket of a quota of tokens paces at it)
            if isinstance(track, AutoTrack) and track.quota.tokens:
                track.ceiling = charge.paced


def refused(window: Any, ticket: Any, named: Any = None) -> None:
    """``ticket`` was refused (429): a bucket of the quota charges more than the least factor
    at which it must refuse it; none when a window of requests could have refused it."""
    charge, track = window.charge, bucket_of(window)
    if charge is None or track is None or ticket is None:
        return
    requests = () if named is not None and named.tokens else window.tracks
    for other in requests:  # a bucket or a window of requests may have refused it
        if isinstance(other, AutoTrack) and not other.quota.tokens and 1 + sum(
                1 for e in other.recent if e.live and not e.refused and e is not ticket
                and e.time > ticket.time - other.window) >= other.limit:
            return
    rate, last = track.limit / track.window, ticket.time + track.quota.margin
    bound, estimated = math.inf, ticket.estimate
    for entry in reversed(track.recent):  # (ours up to the margin after it: maybe first)
        if entry is not ticket and entry.time <= last and entry.live and not entry.refused:
            estimated += entry.estimate
            bound = min(bound, (track.limit + rate * (ticket.time - entry.time)) / estimated)
    if track.carry is not None:
        bound = min(bound, track.carry.most(ticket.time, track.limit, rate, estimated, 0))
    if math.isfinite(bound):
        charge.floor = max(charge.floor, bound)


def bucketless(charge: Any) -> bool:
    """True when a 429 showed a bucket must charge more than a probe served showed it may."""
    return charge is not None and charge.floor > charge.ceiling


def outpaced(charge: Any) -> bool:
    """True when a 429 kept the factor and every bucket left charges more than it: a bucket
    charging what we count would have served what it refused (the factor paces none)."""
    return charge is not None and charge.kept and not bucketless(charge) \
        and charge.floor > charge.factor


def roomy(window: Any, ticket: Any) -> bool:
    """True when a sliding window of each quota, charging at most the factor we count, had
    room for ``ticket`` after every one of ours it may have counted (sent up to a margin
    either way; the server saw no more: ``Charge.partial`` false)."""
    charge = window.charge
    if charge is None or ticket is None or charge.partial:
        return False
    for track in window.tracks:
        if not isinstance(track, AutoTrack):
            continue
        margin, span, tokens = track.quota.margin, track.window, track.quota.tokens
        mine = [e for e in track.recent if e.live and not e.refused and e is not ticket
                and ticket.time - span - margin < e.time <= ticket.time + margin]
        need = charge.factor * (sum(e.estimate for e in mine) + ticket.estimate) \
            if tokens else len(mine) + 1
        if need > track.limit:
            return False
    return True


def clockless(window: Any, ticket: Any) -> bool:
    """True when the 429 to ``ticket``, while a fixed clock minute and a bucket are both
    supposed (:mod:`.silent`), is no clock minute's: to refuse it, one must charge ours that
    may count in its minute (from a margin before its start) more than ``MOST`` or than ours
    served allow (the probes, ``Charge.clocked``, and every minute's answered, :func:`_minutes`),
    and its requests had room. Read as the minute's count, the charge's 429 on a strict
    bucket started at :58 measured "2.62x our estimate" (the minute was young), and nothing
    went for a minute: 1.53x the ideal."""
    charge, shape = window.charge, window.shape
    if charge is None or shape.kind != "unknown" or not shape.served or shape.candidate is None:
        return False
    span, margin = shape.window, shape.margin
    start = shape.candidate + math.floor((ticket.time - shape.candidate) / span) * span
    for track in window.tracks:
        if not (isinstance(track, AutoTrack) and track.learns()):
            continue
        mine = [e for e in track.recent if e.live and not e.refused and e is not ticket
                and start - margin <= e.time <= ticket.time + margin]  # (maybe first)
        if not track.quota.tokens:
            if len(mine) + 1 > track.limit:
                return False  # a minute of requests may have refused it
            continue
        estimated = sum(e.estimate for e in mine) + ticket.estimate
        if track.limit / estimated <= min(charge.clocked, MOST, _minutes(track, shape)):
            return False
    return True


def _minutes(track: Any, shape: Any) -> float:
    """The most a fixed clock minute of ``track``'s token quota charges, by ours it served
    surely within one minute (answered, sent from its start to a margin before its end),
    each rounded up: the opening burst started at :59 bounds it as no probe after it does
    (taken for a minute charging 3x, a tight sliding window was paced at 15 a minute: 3.47x)."""
    span, margin, minutes = shape.window, shape.margin, {}
    for e in track.recent:
        if e.live and not e.refused and e.used is not None:
            index = math.floor((e.time - shape.candidate) / span)
            if e.time + margin < shape.candidate + (index + 1) * span:
                count, estimated = minutes.get(index, (0, 0))
                minutes[index] = (count + 1, estimated + e.estimate)
    return min(((track.limit - count) / estimated for count, estimated in minutes.values()),
               default=math.inf)


def slideless(window: Any, ticket: Any, named: Any = None) -> bool:
    """True when the 429 to ``ticket`` (a probe: a sliding window's or a dry bucket's refusal)
    comes from a server no sliding window describes, so a bucket run dry refused it: its
    requests quota had room for ``ticket`` (or its message ``named`` the tokens,
    :mod:`.named`), the 429s leave a bucket possible (:func:`bucketless`), and one of ours
    answered overflowed a sliding window of its token quota at our bare estimates (the least
    a server charges; ours surely in that window: sent a margin after its start and before
    itself) or was served where such a window counted what it refused earlier, whatever it
    charges (:func:`_served_past`). Read as a sliding window's, a strict bucket started at
    :55 was paced as a sliding log at the factor the 429 kept (1.12x where it charges 1.11x:
    41 a minute where it admits 42, 1.07x the ideal)."""
    charge, track = window.charge, bucket_of(window)
    if charge is None or track is None or ticket is None or bucketless(charge):
        return False
    margin, span = track.quota.margin, track.window
    ours = [e for e in track.recent if e.live and not e.refused]
    requests = () if named is not None and named.tokens else window.tracks
    for other in requests:  # a sliding window of requests may have refused it
        if isinstance(other, AutoTrack) and not other.quota.tokens and 1 + sum(
                1 for e in ours if e.time > ticket.time - span - margin) > other.limit:
            return False
    return any(e.used is not None and e.estimate + sum(
        o.estimate for o in ours if e.time - span + margin < o.time < e.time - margin)
        > track.limit for e in ours) or _served_past(track, ours, window.tracks)


def _served_past(track: Any, ours: list[Any], tracks: Any) -> bool:
    """True when one of ``ours`` answered was served where a sliding window of ``track``'s
    token quota must have counted at least what it counted where it refused an earlier one
    of ours (a 429 its requests had room for; answered: its call ended, neither refused nor
    refunded): no such window, whatever it charges, refused
    the one and served the other. Ours that may have been in the refused one's window (sent
    up to a margin either way) against ours surely in the served one's (sent from a margin
    after its start to a margin before it). A strict silent bucket from :53: its charge's
    429, then the first probe served with the same 46 of ours before it, then the probe
    beyond the bucket refused, read as a sliding window's (2 429s, paced as a log: 1.05x)."""
    margin, span = track.quota.margin, track.window
    requests = [t for t in tracks if isinstance(t, AutoTrack) and not t.quota.tokens]
    for refusal in track.recent:
        if not refusal.refused:  # (uncounted or not: the server counted none of it)
            continue
        if any(1 + sum(1 for e in ours if refusal.time - t.window - margin < e.time
                       <= refusal.time + margin) >= t.limit for t in requests):
            continue  # its requests may have refused it
        most = refusal.estimate + sum(
            o.estimate for o in ours
            if refusal.time - span - margin < o.time <= refusal.time + margin)
        if any(e.answered < math.inf and e.time > refusal.time and most <= e.estimate + sum(
                o.estimate for o in ours if e.time - span + margin < o.time < e.time - margin)
               for e in ours):
            return True
    return False
