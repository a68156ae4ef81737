"""What the server's headers and 429s teach a :class:`.window.Window` with a shape to learn
(``refill="auto"``): the arithmetic of each reading is in :mod:`.shape`, this applies it to the
window's tracks, caps and pause.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from . import answers, bounds, repeat, short, silent
from .auto import AutoTrack
from .fixed import narrow
from .log import Entry
from .others import ours as _units, sent_by as _sent_by, theirs
from .shape import read_reset

__all__ = ["become_fixed", "observe", "settled", "shorter"]


def observe(window: Any, now: float, learners: list[AutoTrack], tokens: bool, remaining: int,
            reset: float | None, ticket: Entry | None, limit: int | None, wall: float,
            at: float | None = None) -> None:
    """What one header reading teaches ``window`` (its ``learners``: the tracks of the unit
    it describes): a limit the server reports, the confirmation of a supposed fixed window by
    the first answer after its boundary, a supposed clock minute when there is no reset, the
    shape :func:`.shape.read_reset` reads, or (a clock minute learned) which minute the answer
    was made in. The server counted ours up to ``ticket``; ``reset`` counts from ``at``."""
    shape = window.shape
    shape.speak()
    track = min(learners, key=lambda t: t.limit)
    since = at if at is not None else now if ticket is None else ticket.time
    if short.undecided(window, now, track, tokens, limit, remaining, reset, since):
        return  # our quota over a shorter window, or not told apart from a lower limit yet
    if limit is not None and 0 < limit < track.limit:
        for t in learners:
            t.set_limit(now, limit)
    if reset is not None and shape.candidate is not None and not shape.vouched:
        # a clock minute supposed from a 429 without a reset (none pointed to it): the
        # server's resets tell its shape instead. Kept, a bucket's random 429 before its
        # first answer was "confirmed" by the requests' remaining (high: the tokens bind),
        # and the bucket paced as a fixed window: 125-130 of its own 429s
        shape.candidate = shape.since = shape.probe = None
    server = track.limit
    # what the server had left: a 429 it leaves room for suggests no lower limit
    repeat.read(window, learners, ticket, since, remaining)
    if shape.kind == "fixed" and shape.late:
        for t in (t for t in learners if t.fixed is not None):
            t.fixed.read(now, remaining)
        return
    if shape.candidate is not None:
        # ours answered within a window (the ticket, answered now, too): what any server
        # still counts of ours in a sliding window (and of the other processes': ``theirs``)
        answered = _units(track, lambda e: e.time > now - track.window
                          and (e.answered <= now or e is ticket)) \
            + theirs(window, track, lambda e: e.time > now - track.window and e.answered <= now)
        jump = shape.jumped(tokens, remaining, server, answered, now)
        if jump is None and ticket is not None and reset is None:  # (:mod:`.answers`)
            jump = answers.restarted(window, track, ticket, remaining, server, shape.candidate,
                                     now, shape.margin)
            shape.by_answer = jump is not None and answers.first(track, shape.candidate, now)
        if jump is not None:  # (a rise read before it showed the new minute first)
            flip = shape.rose or now
            if shape.confirm(True, jump):
                become_fixed(window, now, flipped=flip)
            return
    shape.heard(tokens, remaining, now, server)
    since = shape.since
    if shape.candidate is not None and since is not None and ticket is not None \
            and ticket.seq >= since[0]:
        ours = (ticket.tseq + ticket.tokens - since[1]) if tokens else ticket.seq - since[0] + 1
        start = shape.candidate + shape.skew()  # as ``Window.add`` sets ``since``
        ours += theirs(window, track, lambda e: start <= e.time <= ticket.time)
        fresh = _fresh(window, track, tokens, remaining, server, ours, ticket, now)
        if fresh is None:
            shape.defer()
        elif shape.confirm(fresh, f"{remaining} of {server} "
                                  f"{'tokens' if tokens else 'requests'} remaining"):
            become_fixed(window, now, flipped=shape.rose or now)
        return
    if reset is None:
        epoch = now - wall % shape.window
        boundary = shape.next_boundary(epoch, now)
        last = track.log.entries[-1].time if track.log.entries else None
        if shape.others is not None and (latest := shape.others.latest()) is not None:
            last = latest if last is None else max(last, latest)  # the server counts theirs too
        if last is not None and last < boundary - shape.window - shape.margin:
            # nothing of ours sent since the last boundary (answers come late from a server
            # that queues) nor within the margin before it (counted on either side): the next
            # admission shows whether the server started afresh there, a window sooner
            boundary -= shape.window
        shape.suppose(boundary, "remaining without reset: a clock-minute window supposed, to be "
                                "confirmed after the minute; paced as a sliding window until then")
        return
    if ticket is None or shape.candidate is not None:
        return  # a supposed boundary is pending: the first answer after it decides
    at = ticket.time if at is None else at
    way = min(shape.margin, now - at)  # the longest the ticket took to the server
    if shape.kind == "fixed" and shape.on_phase(at + reset):
        _narrowed(window, now, at + reset, way)  # (at its boundary it looks sliding)
        return
    reading = read_reset(limit or server, remaining, reset, shape.window, at,
                         short.oldest(window, ticket, track.quota.window), short.tolerance(shape))
    if reading is None:
        return
    kind, boundary, why = reading
    if kind == "sliding" and (restarted := _restarted(shape, track, remaining, limit, reset,
                                                       now)) is not None:
        kind, boundary, why = "fixed", at + reset, restarted
    if kind == "bucket":
        shape.votes += 1
        if shape.votes >= 2 and shape.kind != "bucket" and not shape.bucketless:
            shape.learn("bucket", why)
            window.caps.clear()  # read as until a window's room came back: a bucket's level now
        return
    shape.votes = 0
    # A bucket's reset is always the time to refill it: a reset far from that, with units to
    # spare, is no bucket's, whatever later readings look like (the end of a burst into a
    # sliding window reads as a bucket: reset ~ a window, remaining ~ 0).
    shape.bucketless = shape.bucketless or remaining < server
    if kind == "fixed":
        others = (limit or server) - remaining - _sent_by(window, track, ticket)
        if others > 0:  # the server's oldest may be another's: the reset fits a sliding window
            unit = "tokens" if tokens else "requests"
            shape.suppose(boundary, f"{why}, but the server counts {others} {unit} we had not "
                                    "sent: to be confirmed by a probe at that boundary",
                          vouched=True, doubt=way)
            return
        shape.learn("fixed", why, boundary, way)
        become_fixed(window, now)
    elif shape.kind != "sliding":
        shape.learn("sliding", why)


def _restarted(shape: Any, track: AutoTrack, remaining: int, limit: int | None,
               reset: float, now: float) -> str | None:
    """Why a reading read as a sliding window's is a fixed window's that started afresh since
    ours were sent (None if it may be a sliding one): nothing of ``limit`` used, its reset
    about a window ahead (a full bucket's is 0), while ours sent within the window, surely
    there by now, would still count in a sliding one (each at least a request, an input and
    an output token). A burst sent just before a boundary (:58) and answered after it reads
    so: its reset points a window past the boundary, no earlier than our oldest leaves a
    sliding window, and the sliding log it was taken for waited a whole window after each
    burst of the kind, each answered after the next boundary again (3.5x the ideal)."""
    tolerance = short.tolerance(shape)
    if limit is None or remaining < limit or not 2 * tolerance < reset <= shape.window + tolerance:
        return None
    start, end = now - shape.window + tolerance, now - shape.margin
    if not _units(track, lambda e: start < e.time <= end):
        return None
    return (f"{remaining} of {limit} remaining and reset {reset:g} s with ours sent within the "
            "window: a window started afresh since, a fixed window")


def shorter(track: AutoTrack, limit: int | None, reset: float | None) -> bool:
    """True when the server reports at most half ``track``'s limit and resets within the
    window that limit is our rate's share of: our quota over a shorter window (OpenAI: a
    per-minute limit may be enforced per second). Such a reading (and a 429 after it) says
    nothing of a minute's shape or limit (2,400 of 24,000 a minute from a 6 s window stalled
    ``llmguard run`` at 12x); its remaining and reset still cap, its retry-after pauses, until
    readings tell it from a lower limit (:mod:`.short`)."""
    return short.share(track, limit, reset) is not None


def _narrowed(window: Any, now: float, boundary: float, way: float) -> None:
    """A reading puts the learned fixed window's boundary at ``boundary`` or up to ``way`` s
    after (:func:`.fixed.narrow`): moved by a centisecond or more, its counts follow."""
    shape = window.shape
    known = shape.margin if shape.doubt is None else shape.doubt
    epoch, doubt = narrow(shape.epoch, known, shape.window, boundary, way)
    if abs(epoch - shape.epoch) >= 0.01 or abs(doubt - known) >= 0.01:
        shape.epoch, shape.doubt = epoch, doubt
        for track in window.tracks:
            if isinstance(track, AutoTrack) and track.fixed is not None:
                track.narrowed(now, epoch, doubt)


def _fresh(window: Any, track: AutoTrack, tokens: bool, remaining: int, server: int, ours: int,
           ticket: Entry, now: float) -> bool | None:
    """True when ``remaining`` in the answer to ``ticket``, the first of ours sent after the
    candidate boundary (``ours`` of ours sent since it, up to the ticket), shows the server
    started counting afresh there.

    A server counting at arrival reports about ``server - ours``. One that counts an answer as
    it ends (LiteLLM's proxy's headers) also counts ours sent before the boundary and answered
    after it, and ours sent from the boundary on though before the candidate's margin (a call
    let go by an inner limiter as the boundary passed): a server that queues a burst answers
    much of it in the next minute, tens of seconds late. Read so, the reading is still a fixed
    window's when a sliding one could not report it: above what is left of the quota after
    ours sent within a window before the ticket; its ``remaining`` then caps nothing
    (``shape.by_answer``). None when it fits both: undecided. With other processes sharing
    the quota (``Shape.others``), "ours" are every process's (``ours`` counts theirs)."""
    shape = window.shape
    tolerance = max(1, server // 20)
    if remaining >= server - ours - tolerance:
        return True
    boundary = shape.candidate
    counted = _units(track, lambda e: e.time < boundary <= e.answered <= now) \
        + _units(track, lambda e: boundary <= e.time and e.seq <= ticket.seq) \
        + theirs(window, track, lambda e: e.time < boundary <= e.answered <= now
                 or boundary <= e.time <= ticket.time)
    if counted <= ours or remaining < server - counted - tolerance:
        return False
    shape.by_answer = remaining > server - _sent_by(window, track, ticket) + tolerance
    return True if shape.by_answer else None


def settled(window: Any, now: float, probe: Entry, tokens: int, live: int) -> int:
    """``window``'s ``probe`` was answered (``live``, counting ``tokens`` from now on) with no
    ``remaining``, or never sent: what it counts from now on. A fixed count made now is
    rebuilt from the log, which holds the probe as admitted: it is counted as settled there
    too (output given back: as used). What it taught may bring the factor down, ours counted
    anew at it, the probe too: it counts that (counted again at the factor it was settled at,
    a strict silent fixed window from :56 kept 6 tokens too many, 41 a minute where it admits
    42: 1.91x the ideal)."""
    made = [getattr(track, "fixed", None) for track in window.tracks]
    before = probe.tokens
    _settled(window, now, live)
    tokens += probe.tokens - before  # recounted (:func:`.recounted.recount`): as its tracks
    for track, was in zip(window.tracks, made):
        if getattr(track, "fixed", None) not in (None, was):
            track.fixed.adjust(probe, tokens, live)
    return tokens


def _settled(window: Any, now: float, live: int) -> None:
    shape = window.shape
    if not live:
        shape.probe = shape.since = None
    elif silent.quiet(shape):
        if silent.served(window, now):
            become_fixed(window, now)
    else:
        shape.confirm(False, "a probe was admitted but the server reports no remaining")


def become_fixed(window: Any, now: float, flipped: float | None = None) -> None:
    """The shape became a fixed window (``flipped``: an answer read then showed the new one):
    count per window, drop the caps and the pause read under the sliding assumption, but for
    a short retry-after's (the server's own time: :func:`.learn_refusal.refused`)."""
    shape = window.shape
    for track in window.tracks:
        if isinstance(track, AutoTrack) and track.learns():
            track.become_fixed(now, shape.epoch)
            if flipped is not None and track.fixed is not None:
                track.fixed.flipped(flipped)
    window.caps.clear()
    window.paused_until = min(window.paused_until, max(now, shape.hold))
    bounds.windowed(window.charge, window, now)  # no refill explains what it admitted
