"""A learned shape handed between processes: what a shared backend (Redis) publishes from the
:class:`.window.Window` that learned it, and applies to the windows of the other processes.

What is shared is the decision (``kind``, a fixed window's boundary, how far after it the
server's may lie (:attr:`.shape.Shape.doubt`, narrowed by readings: :func:`.fixed.narrow`) and
whether the server counts late (:attr:`.shape.Shape.late`), the effective limit per quota and
why), not the
evidence: each process learns from the answers it gets itself and adopts what another learned
first, so every process paces its reservations the same way.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import beyond, learn
from .auto import AutoTrack
from .log import Log

__all__ = ["Learned", "adopt", "flip_of", "learned", "probe_due", "probe_wait", "same"]

_BY_ANOTHER = " (learned by another process)"

#: ``(kind, epoch or None (loop time), limits per quota (0: as configured), why, late, doubt
#: (a fixed window's, None unknown))``.
Learned = tuple[str, "float | None", tuple[int, ...], str, bool, "float | None"]


def learned(window: Any) -> Learned | None:
    """What ``window`` learned, to be shared (None: nothing to learn, or nothing learned yet)."""
    shape = window.shape
    if shape is None:
        return None
    limits = tuple(t.limit if isinstance(t, AutoTrack) and t.limit < t.quota.limit else 0
                   for t in window.tracks)
    if shape.kind == "unknown" and not any(limits):
        return None
    fixed = shape.kind == "fixed"
    return (shape.kind, shape.epoch if fixed else None, limits, shape.why, fixed and shape.late,
            shape.doubt if fixed else None)


def flip_of(window: Any, now: float) -> str:
    """When an answer last showed a new window of ``window``'s learned fixed count counted
    late (:meth:`.fixed.FixedCount.flipped`), in seconds from ``now`` ('' never): shared with
    the shape, so every process carries no answered call into that window either."""
    flips = [t.fixed.flip for t in window.tracks
             if isinstance(t, AutoTrack) and t.fixed is not None and t.fixed.flip > -math.inf]
    return repr(max(flips) - now) if flips else ""


def same(a: Learned | None, b: Learned | None, window: float) -> bool:
    """True when ``a`` and ``b`` pace alike (a fixed window's boundaries within 0.1 s, modulo
    ``window``: one read later is the same clock minute one window on; sharing a boundary
    between clocks costs a round trip; their doubts within a centisecond, as narrowed)."""
    if a is None or b is None:
        return a is b
    if a[0] != b[0] or a[2] != b[2] or a[4] != b[4]:
        return False
    if (a[5] is None) is not (b[5] is None) or (a[5] is not None and abs(a[5] - b[5]) >= 0.01):
        return False
    if a[1] is None or b[1] is None:
        return a[1] is b[1]
    off = (a[1] - b[1]) % window
    return min(off, window - off) < 0.1


def adopt(window: Any, now: float, shared: Learned) -> None:
    """Pace ``window`` as another process learned: its kind (and boundary) and limits. Nothing
    is rebuilt here that the window does not keep already (a fixed count is rebuilt from the
    log, as when learned in this process)."""
    shape = window.shape
    if shape is None:
        return
    kind, epoch, limits, why, late, doubt = shared
    for track, limit in zip(window.tracks, limits):
        if isinstance(track, AutoTrack) and 0 < limit < track.limit:
            track.set_limit(now, limit)
            unit = "tokens" if track.quota.tokens else "requests"
            shape.limits = f"; the server admits {limit} {unit}{_BY_ANOTHER}"
    if kind == "unknown" or (kind == "fixed" and epoch is None):
        return
    changed = shape.learn(kind, why if why.endswith(_BY_ANOTHER) else why + _BY_ANOTHER, epoch,
                          doubt)
    if kind == "sliding":
        shape.probes = 0
    if kind == "fixed" and (changed or shape.late is not late):
        shape.late = late  # a server counting late: ours in flight carried (:mod:`.fixed`)
        learn.become_fixed(window, now)
    elif kind == "fixed":  # narrowed elsewhere: the counts follow (as ``learn._narrowed``)
        for track in window.tracks:
            if isinstance(track, AutoTrack) and track.fixed is not None:
                track.narrowed(now, shape.epoch, doubt)


def probe_due(window: Any, now: float, tokens: int) -> str:
    """Whether the head of ``window``'s line may go now as the probe of a supposed fixed
    window's boundary (:func:`.beyond.probe`, as this process alone counts): ``"vouched"`` (the
    server's reset points there: it has room then), ``"room"`` (only if the shared log has
    room), or ``""`` (no probe)."""
    shape = window.shape
    if shape is None or shape.probe is not None:
        return ""
    due = shape.probe_at()
    if due is None or now < due:
        return ""
    if shape.vouched:
        return "vouched"
    for track in window.tracks:
        log = track.log if isinstance(track, AutoTrack) else track
        need = tokens if track.quota.tokens else 1
        if isinstance(log, Log) and log.admitted(now) + need > track.quota.limit:
            return ""
    return "room"


def probe_wait(window: Any, now: float, tokens: int) -> float | None:
    """Seconds until a probe of ``tokens`` may go (None: none pending): when it is due and
    within each quota as this process counts it (:func:`.beyond.held`; polled at once, a
    full log spun round trips until it had room)."""
    shape = window.shape
    if shape is None or shape.probe is not None:
        return None
    due = shape.probe_at()
    return None if due is None else max(0.0, due - now, beyond.held(window, now, tokens))
