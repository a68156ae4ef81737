"""Telling a token bucket from a fixed window on a server that says nothing, once a request
beyond a sliding window was served just after a clock minute (:mod:`.silent`: paced within
both since), when our token counts are a guess (:mod:`.charge`, ``silent``: the factor the
server charges is unknown, at least our bare estimate).

* **Beyond the bucket, served** (:func:`cheaper`). The probe that goes once a bucket of the
  quota, ours counted at the factor, is dry proves a fixed window only if ours at their bare
  estimates overflow a bucket too: else a bucket charging less than the factor served it
  (a server charging 1.11x while we counted 1.15x: a fixed window learned, 48 429s of 126).
  The factor comes down to the most such a bucket or a fixed window allows, the latter
  bounded by every probe it served, ours surely in that one's minute (``Charge.clocked``:
  bounded by the probe's own minute alone, a whole minute's room early in it, 1.15x was
  kept to :110 at :45, 1.11x the ideal), and the next one beyond tells.
* **Beyond the minute** (:func:`spent`, :func:`over`). A batch started on a minute sends the
  quota there, which a bucket refilled and a fixed window alike admit: the minute's count is
  spent while no bucket is dry, and paced within both nothing goes until the next minute
  (1.50x the ideal). One request goes then, beyond the fixed window even at our bare
  estimates and within what a bucket holds at the factor: a fixed window refuses it (the one
  429 while learning: a fixed window learned), a bucket serves it (a bucket learned).

* **The minute before, overflowed** (:func:`overflowed`). Started mid-minute, the opening
  burst and the probes of the charge after it (one an answer apart) may overflow that
  minute's fixed window at our bare estimates, all served: with the first probe served just
  after the minute (no sliding window), only a bucket explains both, learned at once. Paced
  within both instead, a fixed window from the minute explained every served probe of the
  factor until the minute filled: 1.15x kept to 102 s, 1.06x the ideal (1.00x now).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from . import bounds, refuted
from .auto import AutoTrack
from .carry import carried
from .fixed import skew

__all__ = ["bucket", "cheaper", "guessed", "over", "over_counted", "overflowed", "refused", "spent",
           "straddled"]


def _learners(window: Any) -> list[AutoTrack]:
    return [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()
            and t.fixed is not None]


def _closed(window: Any, track: AutoTrack, at: float, need: int, before: int,
            counted: bool = False, served: Any = None) -> bool:
    """True when a fixed window of ``track``'s quota (its count from the minute) must refuse
    ``need`` more (tokens at our bare estimates: the least a server charges; ``counted``: as
    we count them) sent at ``at``: ours admitted before the sequence number ``before`` and
    surely after the minute (its skew past it, :func:`.fixed.skew`) fill it, ``served``
    among them though refused (:func:`refused`)."""
    fixed = track.fixed  # (the skew past which its count admits a new window's burst)
    start = fixed.boundary(fixed.index(at)) + fixed.skew()
    if at < start:
        return False
    ours = [e for e in track.recent if (e.live and not e.refused or e is served)
            and start <= e.time and e.seq < before]
    used = sum(track.weight(e) if counted else e.estimate for e in ours) \
        if track.quota.tokens else len(ours)
    return used + need > track.limit


def _holds(track: AutoTrack, at: float, before: int, bare: bool = False,
           served: Any = None) -> float:
    """The most a token bucket of ``track``'s quota (full at most) holds for one of ours
    sent at ``at``, ours admitted before the sequence number ``before`` (``served`` among
    them though refused) counted as we count them (:meth:`.auto.AutoTrack.most`, for a
    moment past; ``bare``: tokens at our bare estimates, the least a server charges)."""
    rate, last = track.limit / track.window, at + track.quota.margin
    most, count, estimated = float(track.limit), 0, 0
    for entry in reversed(track.recent):
        if entry.seq < before and (entry.live and not entry.refused or entry is served):
            count += entry.estimate if bare and track.quota.tokens else track.weight(entry)
            estimated += entry.estimate if track.quota.tokens else 1
            most = min(most, track.limit + rate * (last - entry.time) - count)
    return min(most, carried(track, last, count / estimated if estimated else 1.0) - count)


def spent(window: Any, learners: list[AutoTrack], now: float, tokens: int) -> bool:
    """True when a request of ``tokens`` (as we count them) may go now as the probe beyond
    the minute: beyond a fixed window of one quota surely, within what a bucket of each
    holds (the slack of the way there left)."""
    factor = window.charge.factor if window.charge is not None else 1.0
    estimate = max(1, int(tokens / factor))
    # a bucket charging our bare estimates holds it: served, a bucket surely; refused, a
    # fixed window only if a bucket as we count ours held it too (:func:`refused`), else
    # paced as a sliding window from then on (safe with either)
    return any(_closed(window, t, now, estimate if t.quota.tokens else 1, window.issued)
               for t in learners) \
        and all(_holds(t, now, window.issued, bare=True)
                >= (estimate if t.quota.tokens else 1) + t.slack() for t in learners)


def guessed(window: Any, learners: list[AutoTrack], now: float, tokens: int) -> bool:
    """True when a request of ``tokens`` (as we count them) may go now as a probe of the
    factor: both are spent as we count ours, and neither at our bare estimates. Served, the
    factor comes down to what a bucket or a fixed window allows (:func:`cheaper`), until the
    minute is spent at the factor and at our estimates alike (:func:`spent` then)."""
    charge = window.charge
    if charge is None or not charge.silent or charge.trusted or charge.factor <= 1.0:
        return False
    estimate = max(1, int(tokens / charge.factor))
    return all(not _closed(window, t, now, estimate if t.quota.tokens else 1, window.issued)
               and _holds(t, now, window.issued, bare=True)
               >= (estimate if t.quota.tokens else 1) + t.slack() for t in learners)


def _minute(window: Any, probe: Any) -> float:
    """The highest factor at which a fixed window of the token quota could have admitted
    ``probe``: ours that may count in its minute (from a margin before it), the probe
    included, within the limit (0: no token quota learned)."""
    bound = 0.0
    for track in _learners(window):
        if track.quota.tokens:
            fixed = track.fixed
            start = fixed.boundary(fixed.index(probe.time)) - fixed.margin
            estimated = sum(e.estimate for e in track.recent if e.live and not e.refused
                            and start <= e.time and e.seq <= probe.seq)
            if estimated > 0:
                bound = max(bound, track.limit / estimated)
    return bound


def over(window: Any, probe: Any, served: Any = None) -> bool:
    """True when ``probe`` went beyond a fixed window surely (:func:`spent`): served, a
    bucket; refused, a fixed window if a bucket held it as we count ours (:func:`refused`;
    ``served``: one of ours counted before it though refused)."""
    return any(_closed(window, t, probe.time, probe.estimate if t.quota.tokens else 1,
                       probe.seq, served=served) for t in _learners(window))


def overflowed(window: Any, boundary: float) -> bool:
    """True when ours served in the clock minute before ``boundary`` (surely counted in it:
    sent its skew after its start, arrived its skew before its end) overflow a fixed window
    of one quota at our bare estimates (the least a server charges): it admitted them, so
    it counts no such window (with the first probe served, no sliding window either).
    Answered ones only (a 429 marks the refused; what an answer used is read under a token
    quota, :mod:`.charge`), each counted at its usage once the server was shown to give the
    unused part back (:mod:`.probing`, ``trusted``)."""
    shape = window.shape
    late = shape.skew()
    start, end = boundary - shape.window + late, boundary - late - shape.margin
    return any(_served(window, track, start, end) > track.limit for track in window.tracks
               if isinstance(track, AutoTrack) and track.learns())


def _served(window: Any, track: AutoTrack, start: float, end: float) -> int:
    """Units of ours admitted from ``start`` to ``end`` and served, at our bare estimates
    (:func:`overflowed`)."""
    charge = window.charge
    trusted = charge is not None and charge.trusted
    used = 0
    for e in track.recent:
        if e.live and not e.refused and e.used is not None and start <= e.time <= end:
            used += (min(e.used, e.estimate) if trusted else e.estimate) \
                if track.quota.tokens else 1
    return used


def straddled(window: Any, track: AutoTrack, boundary: float, now: float) -> float | None:
    """When a fixed window of ``track``'s quota from ``boundary`` counted ours from, if at
    all: from the clocks' skew before it (:func:`.fixed.skew`) when, had it counted those
    admitted within the margin before that, it would have refused some of ours it served
    (from then to ``now``, at our bare estimates, more than its limit), and not otherwise
    (None: ours from then on are counted in it, or overflow it alone). On a cold network
    the opening burst, admitted at :59.2, arrives at :00.0 (0.8 s on the way), a fixed
    window from :00 may count it, and the first probe of the shape waited for the next
    minute, paced as a sliding log: a silent bucket served 49 of ours (47 a window) by :18,
    then nothing went for 41 s (1.11x the ideal)."""
    margin = track.quota.margin
    since = boundary - skew(margin, track.window, True)
    if _served(window, track, since, now) <= track.limit \
            < _served(window, track, boundary - margin, now):
        return since
    return None


def over_counted(window: Any, probe: Any, served: Any = None) -> bool:
    """True when ``probe`` went beyond a fixed window of a token quota as we count ours (a
    probe of the factor, :func:`guessed`): refused, it shows the server charges more than
    our bare estimates, by a bucket or a fixed window alike (read as a bucket's refusal, a
    strict fixed window started at :55 was paced as a sliding log: 1.93x the ideal;
    ``served``: as in :func:`refused`)."""
    return any(_closed(window, t, probe.time, probe.tokens, probe.seq, True, served)
               for t in _learners(window) if t.quota.tokens)


def refused(window: Any, probe: Any, served: Any = None) -> bool:
    """True when the refusal of ``probe`` shows a fixed window: beyond one surely, and within
    what a bucket of every quota holds as we count ours. ``served``: the one refused, the
    probe itself (nothing changes) or one of ours sent just before it and refused in its
    place (:func:`.silent.overtaken`), which the server then counted before the probe:
    judged without it, the probe was within the minute."""
    return over(window, probe, served) and all(
        _holds(t, probe.time, probe.seq, served=served) >= (probe.tokens if t.quota.tokens else 1)
        for t in _learners(window))


def cheaper(window: Any, now: float, probe: Any) -> bool:
    """True when ``probe``, beyond the bucket and served, was beyond it only as we count
    tokens at a guessed factor (still, after a 429 to a probe of it: ``Charge.guessed``; or
    kept by a 429 above the least it showed, ``Charge.least``, unless that 429 refuted a
    bucket, :mod:`.refuted`): a bucket charging less could have admitted it, so it proves no
    fixed window (:func:`.bounds.cheaper` brings the factor down, never under what a 429
    showed). A bucket of requests that must have refused it decides."""
    charge = window.charge  # (``guessed``: kept at the guess by its probe's 429)
    if charge is None or charge.heard or not (charge.silent or charge.guessed or (
            charge.kept and charge.factor > charge.least and not refuted.bucketless(charge))) \
            or charge.trusted or charge.factor <= 1.0:
        return False
    for track in _learners(window):
        if not track.quota.tokens and _holds(track, probe.time, probe.seq) < 1:
            return False  # the requests' bucket could not admit it
    bounds.clocked(window, probe)  # (a fixed window's bound: the least of the probes served)
    fixed = min(_minute(window, probe), charge.clocked)
    return bounds.cheaper(charge, window, now, probe, fixed)


def bucket(window: Any, now: float) -> None:
    """A bucket learned: it paces from now on, holding what a bucket holds as ours were
    paced within both (:func:`.bounds.lowered`: its own level lags a factor brought down),
    at the most a bucket charges as the probes it served showed (``Charge.paced``, never
    under what a 429 showed: kept at the factor both shared, a cold silent bucket at :50
    was paced at 1.07x its ceiling of 1.057x to the end, 1.10x the ideal)."""
    charge = window.charge
    if charge is not None:
        if not charge.heard and charge.paced < charge.factor:
            charge.factor = max(1.0, charge.floor, charge.paced)
        bounds.lowered(window, now, charge)
