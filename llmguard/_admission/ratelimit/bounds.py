"""What the probes of a server that says nothing (:mod:`.probing`) bound the charge factor
to, by the shape it may be: a window (fixed or sliding) counts ours with no refill, so what
it admitted bounds the factor from above as it stands; a token bucket refills while ours go,
about a request's worth between two answers, so a probe it admitted bounds the factor only
by what the refill since ours went cannot explain (taking what fitted as a window's count
brought the factor to 1 on a server charging 1.11x: 10-12 429s of 126 in the next burst).
Kept apart until the shape is learned: a fixed window learned brings the factor down to the
window's bound (:func:`windowed`), a bucket learned is probed on as a bucket (:func:`spare`).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from .carry import carried, charged
from .holds import reached, surely
from .recounted import recount

__all__ = ["bucket_of", "bucketed", "ceiled", "cheaper", "clocked", "fitted", "limit_of",
           "logged", "lowered", "minute_of", "ours", "spare", "unrefilled", "windowed"]


def bucket_of(window: Any) -> Any:
    """The token track a token bucket of ``window``'s server would be of (None: no bucket:
    the shape is a fixed window, or a 429 asked for longer than a bucket refills)."""
    shape = window.shape
    if shape is not None and (shape.kind == "fixed" or shape.bucketless):
        return None
    tracks = [t for t in window.tracks if t.quota.tokens and hasattr(t, "learns") and t.learns()]
    return min(tracks, key=lambda t: t.limit) if tracks else None


def spare(window: Any, now: float, estimate: int) -> bool:
    """True when ``window``'s server was learned to be a token bucket and one of the quota
    (full at most, refilling) holds ``estimate`` more now, ours at their bare estimates: a
    probe of the factor there (the bucket as paced refills slower than the server's by it:
    1.21x the ideal at 1.11x on a server charging our estimate)."""
    track = bucket_of(window)
    if track is None or window.shape.kind != "bucket":
        return False
    rate, last = track.limit / track.window, now + track.quota.margin
    most, count = float(track.limit), 0
    for entry in reversed(track.recent):
        if entry.live and not entry.refused:
            count += entry.estimate
            most = min(most, track.limit + rate * (last - entry.time) - count)
    most = min(most, carried(track, last) - count)
    return most >= estimate + 2 * track.quota.margin * rate


def unrefilled(window: Any, ticket: Any) -> bool:
    """True when a token bucket of the quota charging ours as we count them (at the factor)
    would have admitted ``ticket``, refused: the server is no such bucket. False once a
    bucket was learned: it refused ``ticket`` all the same (ours arrived sooner than the
    margin our count allows for, or it charges more); read as a window's count, a probe
    refused so took the factor to 1 on a bucket charging 1.11x (42 429s of 126)."""
    track = bucket_of(window)
    if track is None:
        return True
    if window.shape is not None and window.shape.kind == "bucket":
        return False
    rate, last = track.limit / track.window, ticket.time + track.quota.margin
    most, count, estimated = float(track.limit), 0, 0
    # ours sent up to the margin after it may have reached the server first (a burst's, 0-10
    # ms apart): left out, a strict bucket's refusal at :50 was read as a window's (3 429s)
    for entry in reversed(track.recent):  # two windows: a bucket's bound reaches back
        if entry is not ticket and entry.time <= last and entry.live and not entry.refused:
            count, estimated = count + charged(track, entry), estimated + entry.estimate
            most = min(most, track.limit + rate * (last - entry.time) - count)
    factor = count / estimated if estimated else 1.0
    return min(most, carried(track, last, factor) - count) >= ticket.tokens


def bucketed(window: Any, probe: Any, rounded: bool = True, late: bool = False) -> float:
    """The highest factor at which a token bucket of the quota (full at most, refilling
    ``limit / window`` a second) could have admitted ``probe``: ours up to it from any one
    on, each rounded up, within the quota plus what it refilled since that one (0: no
    bucket, :func:`bucket_of`); each of ours arriving when admitted, or (``late``) as late
    as its way there allows, as the bucket is paced (:mod:`.holds`). Probes go an
    answer apart, and a bucket refills about a request's worth meanwhile: taking what fitted
    as the sliding window's count brought the factor down to 1 on a server charging 1.11x
    (10-12 429s of 126 in the next burst)."""
    track = bucket_of(window)
    if track is None:
        return 0.0
    margin, limit, seq = track.quota.margin, track.limit, probe.seq  # (hoisted: two windows)
    rate, last = limit / track.window, probe.time + reached(probe, margin)
    bound, estimated, count = float("inf"), 0, 0
    for entry in reversed(track.recent):  # (two windows: the log keeps one)
        if entry.seq <= seq and entry.live and not entry.refused:
            estimated, count = estimated + entry.estimate, count + 1
            arrived = entry.time + reached(entry, margin) if late else entry.time
            room = limit + rate * (last - arrived) - (count if rounded else 0)
            bound = min(bound, room / estimated)
    if track.carry is not None and estimated:  # ours older than ``recent`` (:mod:`.carry`)
        bound = min(bound, track.carry.most(last, limit, rate, estimated, count if rounded else 0))
    return 0.0 if bound == float("inf") else bound


def minute_of(window: Any, probe: Any, before: bool = False) -> tuple[int, int, int]:
    """``(estimated, count, limit)``: ours surely counted in ``probe``'s clock minute (sent a
    margin past its start or later, the probe included unless ``before``) by a fixed window
    of the token quota, their estimates and their number, and its limit (0s: no such)."""
    shape = window.shape
    tracks = [t for t in window.tracks if t.quota.tokens and hasattr(t, "learns") and t.learns()]
    if not tracks or shape is None:
        return 0, 0, 0
    track, span = min(tracks, key=lambda t: t.limit), shape.window
    epoch = shape.candidate if shape.candidate is not None else (
        shape.epoch if shape.epoch is not None else -shape.offset)
    start = epoch + math.floor((probe.time - epoch) / span) * span + track.quota.margin
    last = probe.seq - 1 if before else probe.seq
    counted = [e.estimate for e in track.recent if e.live and not e.refused
               and start <= e.time and e.seq <= last]
    return sum(counted), len(counted), track.limit


def clocked(window: Any, probe: Any) -> float:
    """The highest factor at which a fixed clock-minute window of the token quota could have
    admitted ``probe`` (:func:`minute_of`; inf: none of ours). Kept as ``Charge.clocked``
    (the least over the probes served): a bound on a fixed window's factor that the one a
    window holding all of ours (``Charge.windowed``) is not once ours span a minute's start
    (taken for one, the factor came down to 1.02x on a fixed window charging 1.11x started
    at :55: a 429, the hypotheses dropped and probed again, 1.6x the ideal). Each count
    rounded up, one token less each fits them in, as the server admitted them: at ``limit /
    estimated`` (42 of 212 served: 1.1231x, 239 a call), a strict fixed window charging 236
    was paced at 41 a minute where it admits 42 (1.90x the ideal from :55 on a cold network)."""
    estimated, count, limit = minute_of(window, probe)
    bound = (limit - count) / estimated if estimated > 0 else math.inf
    if window.charge is not None:
        window.charge.clocked = min(window.charge.clocked, bound)
    return bound


def fitted(window: Any, ticket: Any, most: float) -> float:
    """While a fixed clock minute and a bucket are both supposed (:mod:`.silent`), the factor
    at which the minute's count of ours fits a 429 to ``ticket``: ours surely in its minute
    admitted (its window's count, ours of the minute before in it, took 1.09x for a fixed
    window charging 1.11x at :55: a second 429). 0.0 when none is supposed, or a minute's
    count could not have refused it (charging at most ``most`` times our estimates)."""
    shape = window.shape
    if shape is None or shape.kind != "unknown" or not shape.served:
        return 0.0
    estimated, count, limit = minute_of(window, ticket, before=True)
    if estimated <= 0 or limit / (estimated + ticket.estimate) > most:
        return 0.0
    return (limit - count) / estimated


def windowed(charge: Any, window: Any, now: float) -> None:
    """``window``'s server was learned to count per fixed window, not to refill: the probes
    it admitted bound what it charges without a bucket's refill to explain them, the factor
    comes down to that (never under what a 429 showed). Kept at what a bucket allows, a
    fixed window charging 1.11x was paced at 1.15x: 41 a minute where it admits 42
    (1.73x the ideal)."""
    if charge is None or charge.heard or charge.trusted:
        return
    # a clock minute's count: what the probes served bound in their own minute (``clocked``);
    # a window holding all of ours (``windowed``) spans the minute before too (1.07x kept,
    # the strict fixed window started at :55 charging 1.11x refused one a minute)
    bound = charge.clocked if window.shape is not None and window.shape.kind == "fixed" \
        and math.isfinite(charge.clocked) else charge.windowed
    if bound >= charge.factor:
        return
    factor = max(charge.least, bound)
    if factor < charge.factor:
        charge.factor = factor
        lowered(window, now, charge)


def cheaper(charge: Any, window: Any, now: float, probe: Any, fixed: float = 0.0) -> bool:
    """The server admitted ``probe``, beyond what a token bucket holds as we count ours
    (:mod:`.silent`): True when a bucket charging at least our estimates, less than the
    factor, could have admitted it; the factor comes down to the most such a bucket allows
    (or a fixed window, ``fixed``: the most at which one could have, beyond both)."""
    # even at our bare estimates (each rounded up: ``limit`` over them, no token less), no
    # bucket of the quota could have admitted it: a fixed window served it
    if bucketed(window, probe, rounded=False) < 1.0:
        return False
    factor = max(bucketed(window, probe), fixed)
    if factor < charge.factor:
        charge.factor = max(charge.least, factor)  # (least: 1, or what a 429 showed)
        lowered(window, now, charge)
    return True


def ceiled(window: Any, now: float, ticket: Any, probed: bool = False,
           told: float | None = None) -> None:
    """``window``'s server, saying nothing, was learned to be a token bucket by its 429 to
    ``ticket``: the factor comes down to the most such a bucket charges, as the probes it
    served showed (``Charge.paced``; never under the least a 429 showed, ``Charge.floor``),
    and the bucket held less than ``ticket`` when it arrived: nothing, less ours sent since
    (left where pacing within both had it, the refused one given back on top, each next one
    was refused: 44 429s). ``probed``: ``ticket`` went beyond the bucket at the factor (the
    charge's probe), so it charges more: the factor goes up to that most too (left at the
    1.108x its walk had reached, a bucket charging 1.113x refused one in every refill: 32).
    ``told``: the 429 said ``ticket`` fits that many seconds after it arrived (a bucket's own
    reckoning), so the bucket held then what charges it less that refill, at the least it
    charges (``Charge.floor``, our estimate at least): taken for nothing, a strict silent
    bucket told 0.6 s waited 2.8 s for the next (two requests' refill)."""
    charge, track = window.charge, bucket_of(window)
    if charge is None or track is None or charge.heard:
        return
    if charge.paced < charge.factor or probed and math.isfinite(charge.paced):
        charge.factor = max(1.0, charge.floor, charge.paced)
    # what a bucket holds as ours were paced within both (its own level lagged far below: a
    # cold silent bucket at :50 refused the probe beyond it, then waited 22 s at -3,400)
    lowered(window, now, charge)
    since = sum(e.tokens for e in track.recent if e.live and not e.refused and e.seq > ticket.seq)
    held = 0.0  # at most, when it was sent (refilled since)
    if told is not None:  # (arrived as late as it may have: refilled less before)
        arrived = min(now, ticket.time + track.quota.margin)
        held = ticket.estimate * max(1.0, charge.floor) - track.limit / track.window * (
            told + arrived - ticket.time)
    track.bucket.drain_to(now, max(0.0, held) - since, ticket.time)


def lowered(window: Any, now: float, charge: Any) -> None:
    """The factor came down: ours of the last two windows count at it (those a bucket's
    bound reaches back to: left at the factor they went at, they kept it at 1.107x on a
    server charging our estimate), and a learned bucket holds what a bucket does with them
    so counted (its level gives nothing back to ours settled: :meth:`.auto.AutoTrack.recount`)."""
    track = bucket_of(window)
    entries = ours(window) if track is None else [
        e for e in track.recent if e.live and not e.refused]
    recount(window, now, charge, entries)
    if track is not None and window.shape.kind == "bucket":
        held = track.bucket
        held.available(now)  # (refilled to now)
        held.level = max(held.level, min(float(held.limit), surely(track, now)))


def limit_of(window: Any) -> int:
    """The token limit in force (a learned one, else the quota's)."""
    return min(t.limit for t in window.tracks if t.quota.tokens)


def logged(window: Any) -> Any:
    """The entries :func:`ours` reads: its first per-minute token quota's log, else its first's."""
    tracks = [t for t in window.tracks if t.quota.tokens and hasattr(t, "learns") and t.learns()]
    track = tracks[0] if tracks else window.tracks[0]
    return getattr(getattr(track, "log", track), "entries", ())


def ours(window: Any) -> list[Any]:
    """Ours in ``window``'s log the server may count: admitted, not refunded nor refused."""
    return [e for e in logged(window) if e.live and not e.refused]
