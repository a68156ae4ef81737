"""Our quota enforced over a shorter window than ours (OpenAI: per-minute limits "may be
enforced over shorter periods"), told apart from a lower limit over our window, and paced
over the server's window once learned (``refill="auto"``).

A reading whose limit is at most half ours and whose reset falls within the window that
limit is our rate's share of (:func:`share`: 2,400 of 24,000 a minute, reset within 6 s)
fits two servers: our quota over 6 s windows, or one admitting only 2,400 a minute (a bucket
of 100 read by an ``rpm=300`` quota resets within 20 s while two thirds full). One reading
cannot tell them apart; a few can (:class:`Short`):

* a **lower limit**: a bucket of that limit over our window resets in the time it refills
  what is missing, ``(limit - remaining) * window / limit``, and never refills faster.
  Consecutive readings that all fit it, over a spread of ``remaining`` twice what the
  tolerance of one reading covers, show it; the limit is then learned as any other (sticky:
  never on one reading, nor on a burst that crosses the tolerance of one).
* a **shorter window**: readings that no bucket of ours gives (at least two), and resets that
  point to moments further apart than the tolerance yet not a whole window of ours apart
  (no fixed window of ours moves its boundary by less; a bucket of ours was ruled out). The
  server's window is then the share, and the quota is paced over it (:func:`adopt`): a track
  of that limit over that window (a ``burst`` share of it, if there is one) learns its shape
  from then on as a minute's would (bucket, fixed window, sliding window), while the quota
  over our window stays a sliding log (never over what was configured). ``statistics().shape``
  and the ``repr`` say so ("over 6 s windows").

Until either shows, the quota stays a sliding log of ours capped by what the server says.
Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from typing import Any

from .auto import AutoTrack
from .bucket import Bucket
from .pair import pairs
from .shape import TOLERANCE

__all__ = ["Short", "adopt", "buckets", "fits_ours", "oldest", "share", "tolerance",
           "undecided"]


def share(track: Any, limit: int | None, reset: float | None) -> float | None:
    """The window (s) over which the server's ``limit`` is ``track``'s rate, when a reading
    of it may be our quota over that shorter window: ``limit`` at most half ours, ``reset``
    within that window (plus the tolerance); else None."""
    if limit is None or reset is None or limit <= 0 or 2 * limit > track.limit:
        return None
    window = track.window * limit / track.limit
    return window if reset <= window + TOLERANCE else None


def fits_ours(limit: int, remaining: int, reset: float, window: float) -> bool | None:
    """Whether ``(remaining, reset)`` of ``limit`` is what a bucket of ``limit`` over our
    ``window`` reports (reset: the time to refill what is missing): True, False, or None when
    too little is missing for the reset to tell (any short window resets that soon too)."""
    per_unit = window / limit
    refill = max(0, limit - remaining) * per_unit
    if abs(reset - refill) > per_unit + TOLERANCE:
        return False
    return None if refill < per_unit + 2 * TOLERANCE else True


class Short:
    """What the readings of one window showed so far (:func:`undecided`)."""

    __slots__ = ("span", "misfits", "spread", "first", "moved", "limits", "lower", "last",
                 "before")

    def __init__(self) -> None:
        #: The server's window (s) once learned and paced over (None: not learned).
        self.span: float | None = None
        #: Readings no bucket of ours gives; ``spread``: per unit, the least and most missing
        #: of its consecutive readings one does (none since the last misfit: absent).
        self.misfits = 0
        self.spread: dict[bool, tuple[int, int]] = {}
        #: Where the first reading's reset pointed (loop time); ``moved``: a later one
        #: pointed elsewhere, less than one of our windows away.
        self.first: float | None = None
        self.moved = False
        #: The limit each unit (False requests, True tokens) reported; ``lower``: readings
        #: showed a lower limit over our window, not a shorter one (for good).
        self.limits: dict[bool, int] = {}
        self.lower = False
        #: Per unit: ``(when, remaining)`` of its last reading.
        self.last: dict[bool, tuple[float, int]] = {}
        #: When ours admitted within a window before the learned one was adopted were (in
        #: order): the server still counts them, its tracks' logs do not (:func:`oldest`).
        self.before: list[float] = []

    def read(self, now: float, track: Any, tokens: bool, limit: int, remaining: int,
             reset: float, at: float) -> str | None:
        """One reading within the share (of ``track``'s quota, heard ``now``; its reset counts
        from ``at``): ``"lower"``, ``"shorter"`` or None (not shown yet)."""
        self.limits[tokens] = limit
        per_unit = track.window / limit
        fit = fits_ours(limit, remaining, reset, track.window)
        then, before = self.last.get(tokens, (now, remaining))
        self.last[tokens] = (now, remaining)
        if remaining - before > (now - then) / per_unit + max(1, limit // 20):
            fit = False  # back up faster than a bucket of ours refills: a window started afresh
        if fit is False:
            self.misfits += 1
            self.spread.pop(tokens, None)
        elif fit:
            missing = limit - remaining
            low, high = self.spread.get(tokens, (missing, missing))
            low, high = self.spread[tokens] = min(low, missing), max(high, missing)
            # (the ends at least twice the band apart: the reset rose with what is missing,
            # as no window's does; a fixed window's readings cross the band within a burst)
            if (high - low) * per_unit >= 4 * (per_unit + TOLERANCE):
                self.lower = True
                return "lower"
        boundary = at + reset
        if self.first is None:
            self.first = boundary
        off = (boundary - self.first) % track.window
        self.moved = self.moved or min(off, track.window - off) > 2 * TOLERANCE
        return "shorter" if self.misfits >= 2 and self.moved else None

    def __str__(self) -> str:
        return "" if self.span is None else f"; over {self.span:g} s windows"


def undecided(window: Any, now: float, track: Any, tokens: bool, limit: int | None,
              remaining: int, reset: float | None, at: float) -> bool:
    """Read one reading of ``window``'s learned ``track`` (the tightest of its unit) for a
    shorter window: True when it teaches nothing more (shorter or not yet told apart from a
    lower limit: the sliding log, capped by what the server says, paces), False when it is
    read as any other (nothing shorter, a lower limit shown, or the shorter window learned:
    its own tracks learn from it). Sets ``shape.shorter`` and, while undecided, its why."""
    shape = window.shape
    state = shape.short
    if state is not None and state.span is not None:
        return False  # learned: its tracks learn the shape (``shape.shorter`` stays True)
    span = share(track, limit, reset)
    shape.shorter = span is not None and (state is None or not state.lower)
    if not shape.shorter:
        return False
    if state is None:
        state = shape.short = Short()
    verdict = state.read(now, track, tokens, limit, remaining, reset, at)
    if verdict == "lower":
        shape.shorter = False
        return False
    if verdict == "shorter" and shape.others is None and shape.kind == "unknown":
        adopt(window, now, span)  # (a shared backend's processes keep the log: not adopted)
        return True
    if shape.kind == "unknown":  # (a shape learned before stays, its why too)
        shape.why = (f"the server reports {limit} of our {track.limit}, reset in {reset:g} s: "
                     f"our quota over a shorter window, or a lower limit; paced as a sliding "
                     "window capped by what it says until its readings show which")
    return True


def adopt(window: Any, now: float, span: float) -> None:
    """Pace ``window``'s learned quotas over the server's ``span`` from ``now``: each unit the
    server reported a limit of gets a learned track of that limit over that window (a burst
    share's, if it has that limit, else a new one: :func:`_fill`), which learns its shape
    from then on; the quotas over our window stay sliding logs."""
    shape = window.shape
    state = shape.short
    state.span, shape.window = span, span
    margin = shape.margin
    tracks = list(window.tracks)
    made = []
    for tokens, limit in state.limits.items():
        if any(isinstance(t, AutoTrack) and t.quota.tokens is tokens and t.learns()
               and t.limit == limit and not t.quota.part for t in tracks):
            continue  # a burst share over that window: it learns from now on
        source = next((t for t in tracks if isinstance(t, AutoTrack)
                       and t.quota.tokens is tokens and not t.quota.part), None)
        if source is None:
            continue
        track = AutoTrack(replace(source.quota, limit=limit, window=span + margin,
                                  margin=margin), shape)
        _fill(track, source, now)
        made.append(track)
    window.tracks = tuple(tracks + made)
    # (refunded ones too, as a log keeps them until they leave: an older oldest never reads
    # a sliding window as a fixed one)
    state.before = [e.time for e in made[0].recent if e.time > now - span - margin] if made \
        else []
    window.pace = pairs(window.tracks)  # (the per-call loops' tracks: :mod:`.pair`)
    learning = [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()]
    if learning:  # its oldest admission tells a fixed window from a sliding one (``first``)
        window.log = min(learning, key=lambda t: t.quota.tokens).log
    shape.why = (f"the server's limits are our quota's share of {span:g} s and its resets "
                 "fall within it: our quota over shorter windows, paced over them")


def _fill(track: AutoTrack, source: AutoTrack, now: float) -> None:
    """``track`` (new) counts ours from ``now`` on: what was sent before is what the server's
    readings cap (``Window.caps``, kept) until its shape is learned, when its readings set
    its bucket (``Bucket.exact``: none of ``source``'s recent ones not settled is known
    missing from the server's) or its fixed count's window (capped until the boundary). A
    log of what ``source`` sent in the last window would hold back the server's room its
    readings show (a bucket refilled meanwhile: 1.11x the ideal against 1.00x capped)."""
    log = track.log
    # ours before ``now``: as if folded away, never counted (and a settlement of one of ours
    # admitted later within the same slot changes nothing here: counted as admitted)
    log.cut = now // log.slot + 1
    track.recent.extend(e for e in source.recent if e.time > now - 2 * track.window)
    bucket = track.bucket
    bucket.at, bucket.exact = now, True
    bucket.outstanding = sum(source.weight(e) for e in source.recent if e.owner is not None)


def oldest(window: Any, ticket: Any, span: float) -> float:
    """When the oldest of ours the server may still count at ``ticket``'s admission was
    admitted (``span``: the learned track's window, margin included): ``ticket.first`` (its
    log's oldest), or one of ours admitted before the shorter window was adopted, which its
    new tracks' logs leave out (:func:`_fill`). Read from the logs alone, the first burst
    after a pause within a window of adoption made the server's reset, pointing one window
    past one of those, look like a boundary before our oldest leaves: a 6 s sliding window
    learned as a fixed one (1.25x the sliding log) by some phases and jitter draws."""
    state = window.shape.short
    before = () if state is None else state.before
    if not before or before[-1] <= ticket.time - span:
        return ticket.first
    return min(ticket.first, before[bisect_right(before, ticket.time - span)])


def buckets(window: Any, tracks: list[Any]) -> list[Any]:
    """Those of ``tracks`` (one unit's) a reading sets as buckets, when each paces as one (a
    bucket quota, or a learned one the server showed to be a bucket), else none: the quotas
    over our window left out once a shorter one is learned (they stay sliding logs)."""
    state = window.shape.short if window.shape is not None else None
    if state is not None and state.span is not None:
        tracks = [t for t in tracks if not isinstance(t, AutoTrack) or t.learns()]
    kind = window.shape.kind if window.shape is not None else None
    if tracks and all(isinstance(t, Bucket) or (kind == "bucket" and isinstance(t, AutoTrack)
                                                and t.learns()) for t in tracks):
        return tracks
    return []


def tolerance(shape: Any) -> float:
    """Seconds of disagreement a reset may show with a shape over ``shape``'s window: the
    minute's ``TOLERANCE``, scaled down for a shorter window learned (a second and a half of
    6 s read a sliding window's reset as a bucket's: 429s until the next reading refuted it)."""
    state = shape.short
    if state is None or state.span is None:
        return TOLERANCE
    return TOLERANCE * min(1.0, state.span / 60)
