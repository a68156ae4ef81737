"""A 429 no shape of the quota gives, from a server that says nothing: a stray one (the
server's own overload, 5 % of requests asking 2 s under 10x demand), teaching nothing.

A server without rate-limit headers tells its shape by the pause its 429s ask: a fixed window
refusing one of a full minute asks to its boundary, a sliding window still full of ours until
our oldest leaves it, a token bucket for the refill of what it misses. A 429 asking for more
than a bare 429's default pause and less than either window would (:func:`windowless`) is no
window's; and when a token bucket, ours admitted before it as counted, surely held the refused
one (:func:`probe`), no bucket's either. Read at its word, such a 429 taught a shape or a
factor the server does not have: the probe after the minute's refusal a sliding window (56 s
idle a minute where it asked 2 s), the first probe after the opening burst's a factor of
1.31x on a bucket charging our estimate, one at the edge of a bucket as we count it "no
bucket" (:mod:`.refuted`). Once a bucket is learned, a 429 asking for longer than it refills
all of the refused one is no refusal of its own (:func:`unbucketed`). Everything here takes
``now`` as an argument.
"""

from __future__ import annotations

from typing import Any

from . import holds
from .auto import AutoTrack
from .charge import MOST
from .refusal import DEFAULT_PAUSE
from .shape import TOLERANCE

__all__ = ["probe", "unbucketed", "windowless"]


def _learners(window: Any) -> list[AutoTrack]:
    return [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()]


def _slides_longer(track: AutoTrack, now: float, seconds: float) -> bool:
    """True when a sliding window of ``track``'s quota, full of ours, would ask for more than
    ``seconds``: until our oldest in it leaves it."""
    oldest = min((e.time for e in track.recent if e.live and not e.refused
                  and e.time > now - track.window), default=None)
    return oldest is not None and oldest + track.window - now > seconds + TOLERANCE


def windowless(window: Any, now: float, ticket: Any, seconds: float, boundary: float) -> bool:
    """True when the 429 at ``now`` to ``ticket`` asking ``seconds`` (a Retry-After: a bare
    429's default pause says nothing) is no window's refusal: its pause ends before the
    boundary of a fixed window (the learned one's, else the clock minute's ``boundary``) and
    before a sliding window of each quota would admit again. From a server that says nothing
    only (its readings tell; a headerless token bucket's own 429s ask its refill)."""
    shape, charge = window.shape, window.charge
    if ticket is None or seconds <= DEFAULT_PAUSE or shape.quiet is False or (
            charge is not None and charge.heard):
        return False
    if shape.kind == "fixed" and shape.epoch is not None:
        boundary = shape.next_boundary(shape.epoch, ticket.time)
    learners = _learners(window)
    return now + seconds < boundary - TOLERANCE and bool(learners) and all(
        _slides_longer(t, now, seconds) for t in learners)


def probe(window: Any, now: float, ticket: Any, seconds: float) -> bool:
    """True when the 429 at ``now`` to ``ticket`` (the probe just after a clock minute,
    :mod:`.silent`, or any), asking ``seconds``, is neither a sliding window's refusal (it
    would ask until our oldest leaves it) nor a token bucket's: one surely held it (ours
    admitted before it as counted), or it asks for longer than a bucket would (:func:`_refill`)."""
    if seconds <= DEFAULT_PAUSE:
        return False
    learners = _learners(window)
    return bool(learners) and all(
        _slides_longer(t, now, seconds) and (holds.surely(t, ticket.time) >= (
            ticket.tokens if t.quota.tokens else 1) or seconds > _refill(window, t, ticket))
        for t in learners)


def unbucketed(window: Any, ticket: Any, seconds: float) -> bool:
    """True when the 429 to ``ticket`` asking ``seconds``, from a server that says nothing
    learned to be a token bucket (no window's refusal to weigh), asks for longer than the
    bucket refills all of it at the most it charges (:func:`_refill`): no refusal of the
    bucket's (it asks until the refused one fits). Taken for its own, a stray 429 at the
    edge of the bucket as counted kept the guess the probes were bringing down, 1.04x where
    it charges our estimate (1.05x the ideal)."""
    shape = window.shape
    if ticket is None or seconds <= DEFAULT_PAUSE or shape.kind != "bucket" or not shape.quiet:
        return False
    learners = _learners(window)
    return bool(learners) and all(seconds > _refill(window, t, ticket) for t in learners)


def _refill(window: Any, track: AutoTrack, ticket: Any) -> float:
    """The longest a token bucket of ``track``'s quota asks before it admits ``ticket``: the
    refill of all of it, charged at the most such a bucket may charge (``Charge.paced``, what
    the probes it served allow; else ``MOST``). Taken for the bucket's (our count of it full
    at our opening guess), a stray 429 asking 2 s to one of a silent bucket charging our
    estimate kept the guess, 1.15x, to the end (1.17x the ideal); one that rounds its pause up
    to the second may cost a second 429 here (:mod:`.repeat`)."""
    need = 1.0
    if track.quota.tokens:
        charge = window.charge
        most = MOST if charge is None else max(charge.factor, min(MOST, charge.paced))
        need = max(ticket.tokens, getattr(ticket, "estimate", ticket.tokens) * most)
    return need * track.window / track.limit
