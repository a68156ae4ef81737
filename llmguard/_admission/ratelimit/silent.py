"""Probing a server that says nothing: no rate-limit header, no 429 while we keep to the quota.

Paced as a sliding log (safe with any shape), a batch started 40 s into a clock minute sends a
quota's burst, then waits a whole window, where a fixed clock-minute window (many gateways)
admits a full quota again 20 s later, at its boundary. Nothing the server says shows that
boundary, so it is probed, at the cost of at most one 429 per key (the issue's bound):

1. When, just after a clock minute, a sliding window counting ours at arrival must still be
   full (:func:`full`: ``limit`` of ours admitted within a window less the margin before) while
   a fixed window starting at that minute has room for one more (:func:`fresh`) (with no
   bucket possible, where the sliding log holds it back long enough to be worth a 429:
   :func:`_first`), the head of the line goes then, alone. Refused (429): a sliding window (or a bucket run dry): paced as
   a sliding log from then on, never probed again. Served: no sliding window of the quota,
   but a token bucket that refilled since our burst serves it as a fixed window does (a
   bucket at once if ours served in the minute before overflowed a fixed window:
   :func:`.apart.overflowed`).
2. Until the two are told apart, ours are paced by both (:class:`.auto.AutoTrack`): within
   the fixed count from that minute and within what a token bucket of the quota still holds
   (ours drain it). Once that bucket is dry (:func:`dry`) while the minute has room, one more
   goes: a bucket must refuse it (a 429, the only one of the two probes: paced as a sliding
   log), a fixed window serves it: learned, a fixed window at the clock minute. A probe of
   the charge factor beyond both as we count ours (:func:`.apart.guessed`), refused, shows
   only that the server charges more than our bare estimates (:func:`refusal`): both stay,
   at the factor guessed (read as the bucket's refusal, a strict fixed window started at :55
   was paced as a sliding log; taken for a fixed window's, the next one beyond the bucket
   as we count ours, served, was a strict bucket's: 30 429s, calls failed).

The bucket is bounded from ours alone (:meth:`.auto.AutoTrack.most`): ours go while it surely
holds them (at most, less what it refills while ours are on the way, each end: the margin),
the second probe once it surely cannot. A margin of half a unit's refill or more (unmeasured:
0.5 s a minute, on a server whose answers time nothing) leaves no such moment: paced within
both, safe with either, the shape stays unknown. A server that answers without any header is
probed only once an answer was read (``MemoryBackend.unsaid``): a layer that reads none paces
a strict sliding log. Through Redis the probes are decided on the shared log, once for every
process sharing the key, and the verdict is theirs too (``backends/redis/_silent``); input/output
quotas (paced as the buckets Anthropic documents) only once a 429 asked for longer than a bucket
refills.

A reading ends it (:meth:`.shape.Shape.speak`): what the server says decides. A 429 of another
request drops the hypothesis under test; one asking for longer than a bucket of ours refills
(a gateway's "retry at the next minute") rules out a bucket, so a served first probe is then
a fixed window at once, and the request it refused is not counted (the server counted none of
it; a short one stays counted: its retry would meet the same 429 at once). Everything here
takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from . import apart, arrived, holds, probing, refuted
from .auto import AutoTrack

__all__ = ["beyond", "dry", "due", "fresh", "full", "overtaken", "quiet", "refusal", "served"]

#: Why, while the first probe is pending and once it was served.
SUPPOSED = ("no rate-limit header heard: a clock-minute window supposed, probed just after "
            "the minute (a sliding window refuses it); paced as a sliding window until then")
EITHER = ("a request beyond a sliding window was served just after the clock minute (no "
          "rate-limit header): a fixed window or a token bucket; paced within both until one "
          "beyond the bucket tells them apart")


def quiet(shape: Any) -> bool:
    """True while ``shape`` may be probed as a server that says nothing: nothing learned and
    nothing heard, paced as a sliding window (not assumed a bucket), a probe left."""
    return (shape is not None and shape.quiet and shape.kind == "unknown"
            and not shape.assumed and shape.probes > 0)


def _need(track: Any, tokens: int) -> int:
    return tokens if track.quota.tokens else 1


def _ours(track: AutoTrack, keep: Any, sent: bool = False) -> int:
    """Units of ours in ``track``'s recent admissions the server counts (not refunded, not
    refused; ``sent``: not queued below either, :mod:`.queued`) for which ``keep(entry)``
    holds."""
    return sum(track.weight(e) for e in track.recent
               if e.live and not e.refused and keep(e.time) and not (sent and e.queued))


def full(track: AutoTrack, at: float, need: int) -> bool:
    """True when a sliding window of ``track``'s quota, counting ours at arrival (up to the
    margin after admission), must refuse ``need`` more admitted at ``at``: ours sent after
    ``at - window + margin`` leave no room for it, wherever in the margin each arrived (ours
    queued below are not there: a probe served beyond them proves nothing)."""
    horizon = at - track.window + track.quota.margin
    return _ours(track, lambda t: t > horizon, sent=True) + need > track.limit


def fresh(window: Any, track: AutoTrack, boundary: float, need: int, now: float) -> bool:
    """True when a fixed window starting at ``boundary`` has room for ``need`` more of ours:
    those admitted from a margin before it on (counted after it, on arrival) leave room, or
    those from when what it served shows it counted ours from (:func:`.apart.straddled`)."""
    def room(start: float) -> bool:
        return _ours(track, lambda t: t >= start) + need <= track.limit

    if room(boundary - track.quota.margin):
        return True
    since = apart.straddled(window, track, boundary, now)
    return since is not None and room(since)


def dry(track: AutoTrack, now: float, need: int) -> bool:
    """True when a token bucket of ``track``'s quota (full at most), drained by ours, must
    refuse ``need`` more sent now (:meth:`.auto.AutoTrack.most`: ours paced within what it
    surely holds, the first beyond it comes when it holds less than that for sure)."""
    return track.most(now) < need


def bracketed(charge: Any) -> bool:
    """True when a 429 bounded what a token bucket charges from below and the probes it served
    from above, under the factor we count (:mod:`.refuted`): its bucket is paced at the most
    it charges (:func:`.carry.charged`), and one beyond that, near what the 429 showed,
    would be refused (a strict bucket at :00 with 6x the quota: a second 429)."""
    return charge is not None and 0.0 < charge.floor and charge.paced < charge.factor


def due(window: Any, now: float, tokens: int) -> float | None:
    """When the head of ``window``'s blocked line (``tokens``) may go as a probe of a server
    that says nothing (None: no probe to send). Supposes the clock minute it probes."""
    shape = window.shape
    if not quiet(shape) or shape.probe is not None:
        return None
    if shape.served and window.charge is not None and probing.flying(window.charge, now):
        return None  # one probe at a time: the charge's answers first (both refused: 2 429s)
    learners = [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()]
    if not learners or any(until > now and left < (tokens if unit else 1)
                           for unit, (left, until, *_) in window.caps.items()):
        return None
    if shape.served:  # one beyond the bucket, within the minute (or beyond the minute)
        at = None
        if not bracketed(window.charge) and any(dry(t, now, _need(t, tokens)) for t in learners):
            at = now + max(t.fixed.wait(now, _need(t, tokens)) for t in learners)
        if (at is None or at > now) and (apart.spent(window, learners, now, tokens) or (
                apart.guessed(window, learners, now, tokens)
                and all(holds.telling(t, now, tokens) for t in learners))):
            at = now  # the minute's count spent first, or only at a guessed factor
        if at is None:
            return None
    else:
        at = _first(window, learners, now, tokens, refuted.bucketless(window.charge))
        if at is None:
            return None
    for track in window.tracks:  # shorter quotas (rps, a burst) still hold it
        if track not in learners:
            at = max(at, now + track.wait(now, _need(track, tokens)))
    return max(at, window.paused_until)


def _first(window: Any, learners: list[AutoTrack], now: float, tokens: int,
           bucketless: bool = False) -> float | None:
    """When the first probe may go: just after the clock minute now passing (or the next),
    when a sliding window must refuse it there and a fixed window from the minute has room;
    once a 429 and the probes served refuted a bucket of the charge (``bucketless``: a fixed
    or a sliding window is left), only where the sliding log would hold it back a tenth of
    a window or more. What a fixed window gains over the log is then all a probe is worth,
    and it costs a sliding window a 429: the strict sliding window from :00, its charge's
    429 at :06, refused the probe at :62 that the log admitted at :64 (two on its tokens). A
    bucket refills all along: worth probing whenever the log holds the line back (1.34x the
    ideal, a silent bucket not probed at :00; a gateway's input/output clock minute, a
    bucket refuted by a long retry-after, 1.06x -> 1.17x). Ours within the margin before the
    minute count in it unless what it served shows a fixed window counted them before it
    (:func:`.apart.straddled`)."""
    shape = window.shape
    skew = shape.skew()
    epoch = now - (now + shape.offset) % shape.window
    for boundary in (epoch, epoch + shape.window):
        at = max(now, boundary + skew)
        if any(full(t, at, _need(t, tokens)) for t in learners) \
                and all(fresh(window, t, boundary, _need(t, tokens), now) for t in learners) and (
                    not bucketless
                    or any(t.wait(at, _need(t, tokens)) > t.window / 10 for t in learners)):
            if shape.candidate != boundary:
                shape.candidate = None
                shape.suppose(boundary, SUPPOSED)
            return at
    shape.candidate = None
    return None


def beyond(window: Any, now: float, tokens: int) -> bool:
    """True when ``tokens`` admitted now by ``window`` go beyond its quotas as paced: the
    probe of a server that says nothing (whichever way it was admitted: a window's ``take``,
    or a composite backend's ``wait`` then ``add``)."""
    shape = window.shape
    return shape.candidate is not None and shape.probe is None and quiet(shape) \
        and not all(t.fits(now, _need(t, tokens)) for t in window.tracks)


def served(window: Any, now: float) -> bool:
    """``window``'s probe was served (no header said anything): the first, a fixed window or
    a bucket (paced within both from now on); the second, beyond the bucket, a fixed window
    (True: the caller counts per window from now on, :func:`.learn.become_fixed`)."""
    shape = window.shape
    probe, shape.probe = shape.probe, None
    if probe is not None:
        refuted.served(window, probe)  # (the most a bucket charges: what admitted it)
    if shape.served:
        if probe is not None and apart.over(window, probe):
            shape.learn("bucket", "a request beyond a fixed window from the clock minute, "
                                  "within a token bucket, was served (no rate-limit header): "
                                  "a token bucket")
            apart.bucket(window, now)
            return False
        if probe is not None and apart.cheaper(window, now, probe):
            return False  # a bucket charging less than we count: the next one beyond tells
        return shape.confirm(True, "a request beyond what a token bucket of the quota holds "
                                   "was served (no rate-limit header)")
    if shape.bucketless:  # a 429 asked for longer than a bucket of ours refills
        return shape.confirm(True, "a request beyond a sliding window was served (no "
                                   "rate-limit header; a 429 asked for longer than a bucket "
                                   "refills)")
    if apart.overflowed(window, shape.candidate):
        shape.learn("bucket", "a request beyond a sliding window was served just after the "
                              "clock minute, and ours served in the minute before overflowed "
                              "a fixed window (no rate-limit header): a token bucket")
        apart.bucket(window, now)
        return False
    shape.served, shape.late, shape.why = True, True, EITHER
    for track in window.tracks:
        if isinstance(track, AutoTrack) and track.learns():
            track.become_fixed(now, shape.candidate)
            since = apart.straddled(window, track, shape.candidate, now)  # (:func:`_first`)
            if since is not None:
                arrived.before(track.fixed, track.recent, since)
    return False


def overtaken(shape: Any, ticket: Any) -> bool:
    """True when a 429 to ``ticket``, not the probe of a server that says nothing, is the
    probe's refusal all the same: ``ticket`` went within the margin before the probe, so the
    probe may have arrived first (0-10 ms of jitter reorder a burst) and been counted, and
    this one, the last to arrive, refused in its place. Ours without the probe fit the
    quota as we count it: the probe went beyond, judged with ``ticket`` before it (without,
    a silent fixed window from :58 read as sliding, 1.49x; as another's 429, a second one)."""
    probe = shape.probe
    return (probe is not None and shape.quiet and probe.live and not probe.refused
            and probe.time - shape.margin <= ticket.time <= probe.time)


def refusal(window: Any, ticket: Any) -> str:
    """What a 429 to ``ticket`` shows of the shape: ``""`` nothing (no probe's), ``"fixed"``
    (the probe beyond the minute, within a bucket: :func:`.apart.refused`), ``"factor"`` (a
    probe of the factor, beyond a fixed window as we count ours: the server charges more
    than our bare estimates, a bucket or a fixed window alike, :func:`.apart.over_counted`;
    answered, the next probe beyond the bucket tells them apart), else ``"shape"``: no fixed
    window from the minute."""
    shape = window.shape
    if ticket is None or not (ticket is shape.probe or overtaken(shape, ticket)):
        return ""
    if shape.served and apart.refused(window, shape.probe, ticket):
        return "fixed"
    if shape.served and apart.over_counted(window, shape.probe, ticket):
        shape.probe = None
        if window.charge is not None:
            window.charge.guessed = True
        return "factor"
    return "shape"
