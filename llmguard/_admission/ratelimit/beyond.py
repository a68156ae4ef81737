"""Requests the quotas hold back, sent anyway as probes: when one may go (:func:`sooner`) and
which (:func:`probe`): the charge's (:mod:`.probing`), a silent server's (:mod:`.silent`), or
the first after a supposed fixed window's boundary (:meth:`.shape.Shape.probe_at`).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from . import probing, silent
from .auto import AutoTrack
from .log import MIN_WAIT, Entry, Log

__all__ = ["held", "probe", "sooner"]


def sooner(window: Any, now: float, wait: float, tokens: int, estimate: int) -> float:
    """``wait`` for ``tokens`` (estimated at ``estimate``) cut to when a probe may go: the
    charge's (:mod:`.probing`), a silent server's (:mod:`.silent`), a supposed boundary's."""
    if wait <= 0.0:
        return wait
    charge, resume = window.charge, window.paused_until
    at = None if charge is None else probing.due(charge, window, now, estimate)
    if at is None and charge is not None and now < resume < now + wait \
            and probing.probes(charge, window, resume, estimate):
        at = resume  # the charge's probe may go once a 429's pause ends: asked again then
        # (waiting for the log instead, a stray 429's pause to a probe left 14 s idle)
    if at is not None:
        if at <= now:
            return 0.0
        wait = min(wait, at - now)
    shape = window.shape
    if shape is not None and shape.probe is None:
        due = silent.due(window, now, tokens) if silent.quiet(shape) else shape.probe_at()
        if due is not None and not silent.quiet(shape):
            due = max(due, now + held(window, now, tokens))
        if due is not None:
            wait = min(wait, max(0.0, due - now))
    return wait


def probe(window: Any, now: float, tokens: int, estimate: int) -> Entry | None:
    """A request ``window``'s quotas would hold back (``tokens`` as the server counts them,
    estimated at ``estimate``), sent anyway as the probe of a supposed fixed window's boundary
    (:meth:`.shape.Shape.probe_at`): its entry, or None."""
    charge = window.charge
    if charge is not None and probing.probes(charge, window, now, estimate):
        return probing.probe(charge, window, now, estimate)
    shape = window.shape
    if shape is None or shape.probe is not None:
        return None
    if silent.quiet(shape):  # a server that says nothing: probed beyond the log
        due = silent.due(window, now, tokens)
        return None if due is None or now < due else window.add(now, tokens, estimate)
    due = shape.probe_at()
    if due is None or now < due or held(window, now, tokens) > 0.0:
        return None
    entry = shape.probe = window.add(now, tokens, estimate)
    return entry


def held(window: Any, now: float, tokens: int) -> float:
    """Seconds until a supposed boundary's probe is within each quota as the server counts
    it (429s left out; 0.0: now), no reset vouching for it: :func:`sooner` waits that long
    (polled each millisecond, a strict clock-minute proxy spun 55,000 times, its log full)."""
    held = 0.0
    for track in () if window.shape.vouched else window.tracks:
        log = track.log if isinstance(track, AutoTrack) else track
        if not isinstance(log, Log):
            continue
        excess = log.admitted(now) + (tokens if track.quota.tokens else 1) - track.quota.limit
        for entry in log.entries if excess > 0 else ():  # oldest first: they leave in order
            excess -= 0 if entry.refused else log.weight(entry)
            if excess <= 0:
                held = max(held, entry.time + log.span - now, MIN_WAIT)
                break
        else:
            held = max(held, log.span if excess > 0 else 0.0)
    return held
