"""What a 429 teaches a :class:`.window.Window` with a shape to learn (``refill="auto"``): the
effective limit, a clock minute, a refuted hypothesis, and when to resume. The arithmetic of a
refusal is in :mod:`.refusal`; what headers teach in :mod:`.learn`.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from . import bounds, changed, probing, refuted, repeat, silent, stray
from .auto import AutoTrack
from .learn import become_fixed
from .log import Entry
from .refusal import (DEFAULT_PAUSE, clock_minute, explained, kept_why, learn_limit, near,
                      reset_of)
from .shape import TOLERANCE

__all__ = ["refused"]


def refused(window: Any, now: float, ticket: Entry | None, seconds: float, wall: float,
            named: Any = None) -> float:
    """A 429 asked for ``seconds`` of pause after the request of ``ticket``: learn the
    effective limit of the quota it ``named`` (:mod:`.refusal`: a 429 at the 60th request of
    a window means the server admits 59), and return when to resume, never earlier than the
    server allows. A retry-after of a window or more (LiteLLM's constant ``60``) says only
    "within a window": on a learned fixed window, resume at the boundary after the minute it
    was made in (read before an answer showed this one: the one before, written late), and
    a supposed boundary may be probed before the pause ends. A shorter one is the server's
    own reckoning of when it admits again: it wins, and no probe goes before it ends."""
    until = now + seconds
    shape = window.shape
    boundary = shape.next_boundary(now - wall % shape.window, now)  # the clock's next minute
    windowless = stray.windowless(window, now, ticket, seconds, boundary)
    if ticket is not None:
        if shape.quiet and shape.kind == "unknown" and not windowless:
            # what a bucket must charge to refuse it; not from a 429 no window gives either (a
            # stray one at the edge of a bucket as we count it "refuted" a silent bucket
            # charging our estimate: paced as a fixed window, then a sliding log, 1.16x)
            refuted.refused(window, ticket, named)
        ticket.refused = True
        changed.counted += 1
    if shape.shorter:  # (:func:`.learn.shorter`): paused as asked, as a sliding log is
        return until
    long = ticket is not None and seconds > TOLERANCE + max(
        (ticket.tokens if t.quota.tokens else 1) * t.window / t.limit
        for t in window.tracks if isinstance(t, AutoTrack))  # more than a bucket refills
    # one of ours refused in place of a probe that arrived first (:func:`.silent.overtaken`):
    # the server's count is read at the probe's place (at its own, one short of the probe, a
    # silent fixed window from :58 with answers out of order read "the server admits 58", #30)
    place = shape.probe if ticket is not None and silent.overtaken(shape, ticket) else ticket
    shows = silent.refusal(window, ticket)  # a probe's: what it shows of the shape
    if shows == "shape" and stray.probe(window, now, ticket, seconds) or shows == "fixed" \
            and DEFAULT_PAUSE < seconds and now + seconds < boundary - TOLERANCE:
        # no shape's (a fixed window refusing one beyond its minute asks to its boundary):
        # the hypothesis stays, probed again after the pause. Read as the fixed window's, a
        # stray 429 to the probe beyond it paced a silent bucket by the minute: 31 429s
        shows = ""
    # no bucket charges both what this 429 shows and what the probes it served allow, and
    # the first probe showed no sliding window: a fixed window (learned once the 429 has
    # measured the charge as both still supposed: as a fixed window's alone, the count of
    # ours over two minutes took the factor to 1.0)
    clocked = shows != "shape" and shape.served and shape.kind == "unknown" \
        and refuted.bucketless(window.charge)
    drained = shows == "shape" and refuted.slideless(window, ticket, named)
    # nor a fixed clock minute charging what the probes it served allow: with a bucket left,
    # the bucket ran dry (the charge's probe, walked down as a bucket allows); with none, a
    # sliding window after all, whose room at what it charges (ours counted at more, the
    # opening factor) served the first probe (learned fixed, a strict one from :58 took a
    # burst into its full window: 55 429s)
    clockless = not shows and not windowless and refuted.clockless(window, ticket)
    unclocked = clockless and not refuted.bucketless(window.charge)
    # paced as a sliding window at what it served with a bucket left charging more (the
    # shape's probe refused, :57): a 429 where such a window had room for ours is that
    # bucket's (kept a window's, a mute bucket charging 1.16x refused 2-4 a window: 9 429s)
    leftover = not shows and not windowless and shape.kind == "sliding" and shape.quiet \
        and refuted.outpaced(window.charge) and refuted.roomy(window, ticket)
    if shows == "fixed":
        shape.confirm(True, "a request beyond a fixed window, within a token bucket, was "
                            "refused (429)")
        become_fixed(window, now)
    elif drained:
        shape.probe = None
        shape.learn("bucket", "a probe was refused (429) after the clock minute where no "
                              "sliding window charging what the probes served allow would: a "
                              "token bucket run dry")
    elif shows == "shape":
        shape.confirm(False, "a probe was refused (429)")
        # the factor a 429 kept, as a bucket's, down to what the window served once no bucket
        # is left (strict, :56: kept at 1.15x where it charges 1.11x, 1.49x), or one is left
        # only charging more than we count (a bucket charging our factor would have served
        # this probe): the factor paces no bucket then (strict, :57, the probe 1.2 s after the
        # minute's second burst: a bucket of 1.156-1.163x left, 41 a window where 42 fit, 1.49x)
        charge = window.charge
        if charge is not None and charge.kept and (
                refuted.bucketless(charge) or charge.floor > charge.factor):
            bounds.windowed(charge, window, now)
            shape.limits = kept_why(charge)
    elif unclocked:
        shape.learn("bucket", "a 429 no fixed clock minute that served the probes would give, "
                              "after a request beyond a sliding window was served (no "
                              "rate-limit header): a token bucket run dry")
    elif leftover:
        shape.learn("bucket", "a 429 within a sliding window at the factor it served, a "
                              "bucket left charging more (no rate-limit header): a token bucket")
    elif clocked and clockless:  # (before the 429 measures the charge, as a sliding window's)
        shape.confirm(False, "a 429 neither a token bucket nor a fixed window that served "
                             "the probes would give")
    # the first probe's 429, ours counted at a factor only guessed: a sliding window full at
    # what it charges or a bucket charging that factor, run dry, alike. The factor stays, and
    # its probes go on in the sliding log: the first served beyond what such a bucket holds
    # refutes it (:mod:`.refuted`), and the factor comes down to the window's count (kept at
    # the guess, a tight one from :50 took 41 a window where it admits 47: 1.49x the ideal)
    unsure = shows == "shape" and not drained and _guessing(window.charge)
    if unsure:
        probing.kept(window.charge, window, ticket)
    minute = None if long else clock_minute(window, now, ticket, seconds, boundary)
    if (long or minute) and shape.kind == "unknown":  # no bucket: what ours filled is read as
        shape.assumed = ""  # a window's, not from a bucket assumed (input/output, :mod:`.shape`)
        shape.bucketless = shape.bucketless or bool(shape.quiet)  # (no reading to vote)
    pause = (until, seconds <= DEFAULT_PAUSE)
    unshaped = windowless and stray.probe(window, now, ticket, seconds) \
        or stray.unbucketed(window, ticket, seconds)  # nor a bucket's (one learned: its alone)
    why = reset_of(now, learn_limit(window, now, place, named, pause, sure=long,
                                    stray=unshaped, measures=not unsure), ticket, seconds)
    if clocked and shape.served and shape.kind == "unknown":
        shape.confirm(True, "a 429 no token bucket that served the probes would give")
        become_fixed(window, now)
    # a server that says nothing else counted none of it: nor do we (and it asked for a pause:
    # no storm); a bare 429's default pause stays counted (uncounted, its retry would meet
    # the same 429 at once). Counted, a stray 429 asking 2 s held its slot for a window: the
    # log full, where a sliding window of the server's had room, and no probe at the minute.
    # Nor a fixed window asking a pause short of its boundary (not full): kept, a retry
    # refused at random held the minute full, 52 s idle with room. Nor the bucket learned
    # here: drained to what it held without it below (given back after, each next one was
    # refused, the bucket as we count it 137 tokens over the server's: 32 429s)
    if shape.quiet is not False and (shows or long or seconds > DEFAULT_PAUSE or unclocked
                                     or leftover) or \
            shape.kind == "fixed" and repeat.foreign(window, ticket, *pause):
        window.adjust(now, ticket, 0, live=0)
    if drained or unclocked or leftover:  # paced at the most such a bucket charges, from
        # what it held (a pause shorter than a bare 429's is the server's own: when the
        # refused one fits)
        bounds.ceiled(window, now, ticket, probed=unclocked or leftover,
                      told=seconds if seconds < DEFAULT_PAUSE else None)
    if shows != "factor":  # (the factor's: the hypothesis stays, its probe answered)
        shape.speak(reading=False)
    if (why or minute) is not None and shape.kind == "unknown":
        shape.learn("fixed", why or minute, now + seconds if why else boundary)
        become_fixed(window, now)
    if not shows and shape.kind == "fixed" and shape.late and shape.quiet \
            and _admits(window, ticket, now):
        shape.learn("sliding", "a 429 within what a fixed clock minute admits of ours (no "
                               "rate-limit header): not one; paced as a sliding window")
    if seconds < shape.window - TOLERANCE:
        shape.hold = max(shape.hold, until)
        if shape.kind == "fixed" and shape.epoch is not None and ticket is not None \
                and seconds <= DEFAULT_PAUSE and explained(window, now, ticket):
            # a learned fixed window refused one of its minute, ours filling it, with a bare
            # 429's pause: full until its boundary (the default pause, retried each second: 25
            # 429s in a strict minute); one sent within the skew after a boundary may have been
            # refused in the minute before. A longer pause is the server's own reckoning (a
            # fixed window's points to its boundary): a random 429 at the tail of a minute's
            # burst asking 2 s held the minute, 56 s idle with room
            skew = shape.skew()
            until = max(until, shape.next_boundary(shape.epoch, ticket.time - skew) + skew)
    elif shape.kind == "fixed" and shape.epoch is not None:
        fixed = [t.fixed for t in window.tracks if getattr(t, "fixed", None)]
        made = ticket.time if ticket and fixed and all(f.stale(now, ticket) for f in fixed) else now
        until = min(until, shape.next_boundary(shape.epoch, made) + shape.skew())
    if shape.kind == "unknown":
        shape.suppose(boundary,
                      f"a 429 asked for {seconds:g} s without a reset time: a clock-minute "
                      "window supposed, to be confirmed after the minute" + (
                          "" if shape.assumed else
                          "; paced as a sliding window until then (no bucket's refill)"))
    return until


def _guessing(charge: Any) -> bool:
    """True while ``charge`` is a silent server's guess, never refused (no 429 measured it),
    at or above what a bucket must charge to have refused a probe (``Charge.floor``), a
    bucket still possible (:func:`.refuted.bucketless`)."""
    return charge is not None and charge.silent and not charge.trusted and not charge.kept \
        and not charge.heard and charge.floor <= charge.factor \
        and not refuted.bucketless(charge)


def _admits(window: Any, ticket: Entry | None, now: float) -> bool:
    """True when a fixed clock minute of each quota, charging at most the factor we count,
    would have admitted ``ticket`` after ours surely in its minute: its 429 refutes a fixed
    window learned from a server that says nothing (a bucket charging 1.11x taken for one at
    :00 refused a burst at each minute's start: 5 429s). Not on a part of the requests the
    server counts (``Charge.partial``: a shared backend reads them all)."""
    if ticket is None or window.charge is None or window.charge.partial:
        return False
    estimated, count, limit = bounds.minute_of(window, ticket, before=True)
    requests = window.limit(False)
    charged = window.charge.factor * (estimated + ticket.estimate)
    if not (estimated > 0 and charged <= limit and (requests is None or count + 1 < requests)):
        return False
    # a stray 429 (the server's own overload) refutes nothing: one near a limit, twice
    tracks = [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()]
    track = min(tracks, key=lambda t: t.quota.tokens)  # (the requests quota's, if any)
    near_requests = requests is not None and count + 1 > requests - near(requests)
    return (charged > limit - near(limit) or near_requests) and repeat.heard(
        window, track, "shape", count if not track.quota.tokens else round(charged), ticket, now)
