"""Probing what a server that says nothing charges against a token quota (``refill="auto"``,
:mod:`.charge`'s ``silent`` state), one request at a time.

A server whose answers carry no token readings may count ours at their estimate or more (11%
more: OpenAI counts characters, framing included). Taking the estimate as its count at the
first answer (and giving back the unused output) sent the room it freed in one burst into a
server still counting the opening burst at 1.11x (18 429s of 126, then 15 more a window
later). So what was reserved at the opening factor stays counted, and when the token quota
holds a request back that our bare estimates leave room for, it goes anyway as a probe, one
at a time: admitted, the server counted ours in its window, the probe included, at most at
the quota, and the factor comes down to that (never under 1). Once our bare estimates leave
no room either, the probe is one that only the unused tokens of the answers, given back,
leave room for: admitted, the server gives them back (``trusted``: the usage counts from then
on, as the usage-reconciling ``charge="actual"`` means). A probe refused on tokens measures
the factor from the other side and ends probing (:meth:`.charge.Charge.refused`): the server
keeps what it charged, at that factor. One at a time, at most one request is refused while
the charge is learned.

A bucket that refills while probes go (one per answer's latency) admits them all: the factor
comes down towards 1 then, which a bucket, refilling, tolerates (it admits anything a
sliding window does); a refusal then raises it again.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cheaper", "lowered", "ours", "probe", "probes", "recount", "unrefilled", "windowed"]


def probes(charge: Any, window: Any, now: float, estimate: int) -> bool:
    """True when ``window`` may send a request estimated at ``estimate`` as a probe now
    (:func:`probe`): a silent server not yet read, no probe in flight, nothing but the token
    quotas at the factor holding it back, and room for it at our bare estimates, else with
    the unused tokens of the answers given back."""
    if not charge.silent or charge.trusted or window.paused_until > now:
        return False
    if window.shape is not None and window.shape.probe is not None:
        return False  # one probe at a time: the shape's (:mod:`.silent`) answers first
    last = charge.probing
    if last is not None and last.live and last.answered > now and not last.refused:
        return False
    if any(cap[1] > now for cap in window.caps.values()):
        return False
    if not all(track.fits(now, 1) for track in window.tracks if not track.quota.tokens):
        return False
    entries, limit = ours(window), _limit(window)
    if sum(e.estimate for e in entries) + estimate <= limit or _spare(window, now, estimate):
        return True
    return not charge.refills and sum(_given(e) for e in entries) + charge.units(estimate) <= limit


def probe(charge: Any, window: Any, now: float, estimate: int) -> Any:
    """Admit a request estimated at ``estimate`` (after :func:`probes` said it may go): the
    last probe, if the server admitted it, first brings the factor down (:func:`_probed`),
    then it goes, as the next probe if the token quotas still hold it back. Its entry."""
    last, charge.probing = charge.probing, None
    if last is not None and last.live and not last.refused:
        if charge.testing:
            if _refilled(window, last):
                charge.refills = True
            else:
                _trusted(charge, window, now)
        else:
            _probed(charge, window, now, last)
    tokens = charge.units(estimate)
    held = not all(t.fits(now, tokens) for t in window.tracks if t.quota.tokens)
    charge.testing = held and sum(e.estimate for e in ours(window)) + estimate > _limit(window) \
        and not _spare(window, now, estimate)
    shape = window.shape
    before = shape.probe if shape is not None else None
    entry = window.add(now, tokens, estimate)
    if shape is not None:  # beyond the token count, but no probe of the shape (:mod:`.silent`)
        shape.probe = before
    if held and not charge.trusted:
        charge.probing = entry
    return entry


def _trusted(charge: Any, window: Any, now: float) -> None:
    """The server admitted a probe only the unused tokens of the answers given back left
    room for: it gives them back; the usage counts from now on."""
    charge.trusted, charge.factor = True, 1.0
    recount(window, now, charge, ours(window), _given)


def _bucket(window: Any) -> Any:
    """The token track a token bucket of ``window``'s server would be of (None: no bucket:
    the shape is a fixed window, or a 429 asked for longer than a bucket refills)."""
    shape = window.shape
    if shape is not None and (shape.kind == "fixed" or shape.bucketless):
        return None
    tracks = [t for t in window.tracks if t.quota.tokens and hasattr(t, "learns") and t.learns()]
    return min(tracks, key=lambda t: t.limit) if tracks else None


def _spare(window: Any, now: float, estimate: int) -> bool:
    """True when ``window``'s server was learned to be a token bucket and one of the quota
    (full at most, refilling) holds ``estimate`` more now, ours at their bare estimates: a
    probe of the factor there (the bucket as paced refills slower than the server's by it:
    1.21x the ideal at 1.11x on a server charging our estimate)."""
    track = _bucket(window)
    if track is None or window.shape.kind != "bucket":
        return False
    rate, last = track.limit / track.window, now + track.quota.margin
    most, count = float(track.limit), 0
    for entry in reversed(track.recent):
        if entry.live and not entry.refused:
            count += entry.estimate
            most = min(most, track.limit + rate * (last - entry.time) - count)
    return most >= estimate + 2 * track.quota.margin * rate


def _refills(window: Any, probe: Any, count: Any) -> float:
    """The most a token bucket of the quota (full at most, refilling ``limit / window`` a
    second) can hold when ``probe`` arrives (within the margin), less ours up to it, each
    counted at ``count(entry)``: the least over each of ours of the quota plus the refill
    since it, less ours since (inf: no bucket, :func:`_bucket`)."""
    track = _bucket(window)
    if track is None:
        return float("inf")
    limit, rate = track.limit, track.limit / track.window
    last, counted, most = probe.time + track.quota.margin, 0.0, float("inf")
    for entry in reversed(ours(window)):
        if entry.seq <= probe.seq:
            counted += count(entry)
            most = min(most, limit + rate * (last - entry.time) - counted)
    return most


def _refilled(window: Any, probe: Any) -> bool:
    """True when a token bucket that gives nothing back could have admitted ``probe``, ours
    counted as reserved: its admission shows no give-back then. A bucket refills a request's
    worth between two answers, so a probe an answer after the last fits one (strict token
    bucket: trusted at 18 s, then 5 429s, 12 more a window later)."""
    return _refills(window, probe, lambda e: e.tokens) >= 0


def unrefilled(window: Any, ticket: Any) -> bool:
    """True when a token bucket of the quota charging ours as we count them (at the factor)
    would have admitted ``ticket``, refused: the server is no such bucket."""
    track = _bucket(window)
    if track is None:
        return True
    rate, last = track.limit / track.window, ticket.time + track.quota.margin
    most, count = float(track.limit), 0
    for entry in reversed(track.recent):  # two windows: a bucket's bound reaches back
        if entry.seq < ticket.seq and entry.live and not entry.refused:
            count += entry.tokens
            most = min(most, track.limit + rate * (last - entry.time) - count)
    return most >= ticket.tokens


def _given(entry: Any) -> int:
    """What ``entry`` counts on a server that gives unused tokens back."""
    used = getattr(entry, "used", None)
    return entry.tokens if used is None else min(used, entry.tokens)


def _probed(charge: Any, window: Any, now: float, probe: Any) -> None:
    """The server admitted ``probe``: it counted ours in its window up to it at most at
    the token quota, each rounded up (one token less each)."""
    entries = ours(window)
    counted = [e for e in entries if e.seq <= probe.seq]
    estimated = sum(e.estimate for e in counted)
    if estimated <= 0:
        return
    windowed = max(1.0, (_limit(window) - len(counted)) / estimated)
    charge.windowed = min(charge.windowed, windowed)
    factor = max(windowed, _bucketed(window, probe))
    if factor < charge.factor:
        charge.factor = factor
        lowered(window, now, charge)


def _bucketed(window: Any, probe: Any, rounded: bool = True) -> float:
    """The highest factor at which a token bucket of the quota (full at most, refilling
    ``limit / window`` a second) could have admitted ``probe``: ours up to it from any one
    on, each rounded up, within the quota plus what it refilled since that one (0: no
    bucket, :func:`_bucket`). Probes go an answer apart, and a bucket refills about a
    request's worth meanwhile: taking what fitted as the sliding window's count brought the
    factor down to 1 on a server charging 1.11x (10-12 429s of 126 in the next burst)."""
    track = _bucket(window)
    if track is None:
        return 0.0
    rate, last = track.limit / track.window, probe.time + track.quota.margin
    bound, estimated, count = float("inf"), 0, 0
    for entry in reversed(track.recent):  # (two windows: the log keeps one)
        if entry.seq <= probe.seq and entry.live and not entry.refused:
            estimated, count = estimated + entry.estimate, count + 1
            room = track.limit + rate * (last - entry.time) - (count if rounded else 0)
            bound = min(bound, room / estimated)
    return 0.0 if bound == float("inf") else bound


def windowed(charge: Any, window: Any, now: float) -> None:
    """``window``'s server was learned to count per fixed window, not to refill: the probes
    it admitted bound what it charges without a bucket's refill to explain them, the factor
    comes down to that (never under what a 429 showed). Kept at what a bucket allows, a
    fixed window charging 1.11x was paced at 1.15x: 41 a minute where it admits 42
    (1.73x the ideal)."""
    if charge is None or charge.heard or charge.trusted or charge.windowed >= charge.factor:
        return
    factor = max(charge.least, charge.windowed)
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
    if _bucketed(window, probe, rounded=False) < 1.0:
        return False
    factor = max(_bucketed(window, probe), fixed)
    if factor < charge.factor:
        charge.factor = max(1.0, factor)
        lowered(window, now, charge)
    return True


def lowered(window: Any, now: float, charge: Any) -> None:
    """The factor came down: ours of the last two windows count at it (those a bucket's
    bound reaches back to: left at the factor they went at, they kept it at 1.107x on a
    server charging our estimate), and a learned bucket holds what a bucket does with them
    so counted (its level gives nothing back to ours settled: :meth:`.auto.AutoTrack.recount`)."""
    track = _bucket(window)
    entries = ours(window) if track is None else [
        e for e in track.recent if e.live and not e.refused]
    recount(window, now, charge, entries)
    if track is not None and window.shape.kind == "bucket":
        held = track.bucket
        held.available(now)  # (refilled to now)
        held.level = max(held.level, min(float(held.limit), track.most(now) - track.slack()))


def _limit(window: Any) -> int:
    """The token limit in force (a learned one, else the quota's)."""
    return min(t.limit for t in window.tracks if t.quota.tokens)


def ours(window: Any) -> list[Any]:
    """Ours in ``window``'s log the server may count: admitted, not refunded nor refused (the
    log of its first per-minute token quota, else of its first quota)."""
    tracks = [t for t in window.tracks if t.quota.tokens and hasattr(t, "learns") and t.learns()]
    track = tracks[0] if tracks else window.tracks[0]
    return [e for e in getattr(getattr(track, "log", track), "entries", ())
            if e.live and not e.refused]


def recount(window: Any, now: float, charge: Any, entries: list[Any],
            count: Any = None) -> None:
    """Count ``entries`` at what ``charge`` says the server charged them (or ``count(entry)``),
    settled or not."""
    for entry in entries:
        charged = charge.units(entry.estimate) if count is None else count(entry)
        if charged == entry.tokens:
            continue
        for each in window.tracks:
            if not each.quota.tokens:
                continue
            again = getattr(each, "recount", None)  # a learned quota's pacers
            if again is not None:
                again(now, entry, charged)
            elif not hasattr(each, "rescale"):  # a log
                each.adjust(now, entry, charged, entry.live)
            elif entry.owner is window:  # a bucket settles once: only what is outstanding
                each.rescale(now, entry, charged)
        entry.tokens = charged
