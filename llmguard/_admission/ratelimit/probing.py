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
leave room for: admitted, and beyond what a bucket refilling since ours went holds (ours at
their bare estimates), the server gives them back (``trusted``: the usage counts from then
on, as the usage-reconciling ``charge="actual"`` means). A probe refused on tokens measures
the factor from the other side and ends probing (:meth:`.charge.Charge.refused`): the server
keeps what it charged, at that factor. One at a time, at most one request is refused while
the charge is learned.

A bucket that refills while probes go (one per answer's latency) admits them all: taken as a
window's count, the factor came down to 1 on a server charging 1.11x, and the next window's
burst was refused in part (10-12 429s of 126). So until the shape is known a served probe
lowers the factor only by what a bucket's refill since ours went cannot explain
(:mod:`.bounds`); a fixed window learned brings it to what fitted.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import bounds, refuted
from .bounds import lowered, ours
from .recounted import recount
from .served import served_at

__all__ = ["due", "flying", "kept", "ours", "probe", "probes", "recount"]


def probes(charge: Any, window: Any, now: float, estimate: int) -> bool:
    """True when ``window`` may send a request estimated at ``estimate`` as a probe now
    (:func:`probe`): a silent server not yet read, no probe in flight, nothing but the token
    quotas at the factor holding it back, and room for it at our bare estimates, else with
    the unused tokens of the answers given back."""
    if not charge.silent or charge.trusted or window.paused_until > now:
        return False
    if window.shape is not None and window.shape.probe is not None:
        return False  # one probe at a time: the shape's (:mod:`.silent`) answers first
    answering = flying(charge, now)  # served as far as a 429 tells, its answer to come
    if answering and now < served_at(window, charge.probing):
        return False
    if any(cap[1] > now for cap in window.caps.values()):
        return False
    if not all(track.fits(now, 1) for track in window.tracks if not track.quota.tokens):
        return False
    entries, limit = ours(window), bounds.limit_of(window)
    if window.shape is not None and window.shape.kind == "bucket":  # what it holds, nothing
        return bounds.spare(window, now, estimate)  # else (a minute's room in the log: a 429,
    if sum(e.estimate for e in entries) + estimate <= limit:  # our burst earlier drained it)
        return True
    # the give-back test waits for the answers: its 429 (OpenAI keeps ``max_tokens`` charged)
    # is read against the refill of a bucket since ours went, and the fast probes before it
    # leave a bucket charging more refilled too little to be told from a window charging
    # less (sent at :02, the factor was kept at 1.043 on a fixed window charging 1.0: 45 a
    # minute where it admits 47, 1.49x)
    return not answering and not charge.refills \
        and sum(_given(e) for e in entries) + charge.units(estimate) <= limit


def kept(charge: Any, window: Any, ticket: Any) -> None:
    """A 429 to ``ticket`` (the shape's probe, the charge still a guess) that ours at what
    their answers used left room for: the server keeps what it charged, as the give-back
    test's refusal would show, so that test ends unsent (sent, a tight mute sliding window
    from :50 refused it too: 2 429s)."""
    entries = [e for e in ours(window) if e is not ticket]
    if sum(_given(e) for e in entries) + charge.units(ticket.estimate) <= bounds.limit_of(window):
        charge.refills = True


def flying(charge: Any, now: float) -> bool:
    """True while ``charge``'s last probe is in flight (sent, not answered nor refused)."""
    last = charge.probing
    return last is not None and last.live and last.answered > now and not last.refused


def due(charge: Any, window: Any, now: float, estimate: int) -> float | None:
    """When a probe of the charge may go (:func:`probes`): now, when the one in flight counts
    as served (:func:`served_at`), to be asked again then, or None. Not asked of that moment
    now: the logs expire ours as of the time asked, and seconds ahead (a bucket's refill,
    :func:`.served.refuting`) one left them early and the quota admitted a request more (4 at
    ``rpm=3``)."""
    if probes(charge, window, now, estimate):
        return now
    if not flying(charge, now):
        return None
    at = served_at(window, charge.probing)
    return at if now < at < math.inf else None


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
    charge.testing = held and not bounds.spare(window, now, estimate) \
        and sum(e.estimate for e in ours(window)) + estimate > bounds.limit_of(window)
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


def _refills(window: Any, probe: Any, count: Any) -> float:
    """The most a token bucket of the quota (full at most, refilling ``limit / window`` a
    second) can hold when ``probe`` arrives (within the margin), less ours up to it, each
    counted at ``count(entry)``: the least over each of ours of the quota plus the refill
    since it, less ours since (inf: no bucket, :func:`.bounds.bucket_of`)."""
    track = bounds.bucket_of(window)
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
    counted at their bare estimates (the least it charges): its admission shows no give-back
    then. A bucket refills a request's worth between two answers, so a probe an answer after
    the last fits one (strict token bucket: trusted at 18 s, then 5 429s, 12 more a window
    later); counted as reserved (at the opening factor), a bucket charging less fits it too
    (started at :50 or :55, trusted, then 17 429s; 27 at 1.11x)."""
    return _refills(window, probe, lambda e: e.estimate) >= 0


def _given(entry: Any) -> int:
    """What ``entry`` counts on a server that gives unused tokens back."""
    used = getattr(entry, "used", None)
    return entry.tokens if used is None else min(used, entry.tokens)


def _probed(charge: Any, window: Any, now: float, probe: Any) -> None:
    """The server admitted ``probe``: it counted ours in its window up to it at most at
    the token quota, each rounded up (one token less each). A sliding window learned:
    ours surely in it as the probe arrived, those that left the log since its answer
    included (read without them, a tight one's 47th was "the 46th": 1.02x kept, 1.08x)."""
    track = bounds.bucket_of(window) if window.shape.kind == "sliding" else None
    entries = ours(window) if track is None else [
        e for e in track.recent if e.live and not e.refused
        and e.time > probe.time + track.quota.margin - track.window]
    counted = [e for e in entries if e.seq <= probe.seq]
    estimated = sum(e.estimate for e in counted)
    if estimated <= 0:
        return
    windowed = max(1.0, (bounds.limit_of(window) - len(counted)) / estimated)
    bounds.clocked(window, probe)  # what a fixed clock minute's count of it allows
    refuted.served(window, probe)  # and a bucket's (while both are supposed, it paces at it)
    charge.windowed = min(charge.windowed, windowed)
    # (as paced; no bucket once the 429s and the probes served refuted every one)
    bucketed = 0.0 if refuted.bucketless(charge) else bounds.bucketed(window, probe, late=True)
    factor = max(windowed, bucketed)
    if factor < charge.factor:
        charge.factor = factor
        lowered(window, now, charge)
