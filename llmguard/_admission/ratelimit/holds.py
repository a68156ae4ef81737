"""What a token bucket of a learned quota (:class:`.auto.AutoTrack`) holds for one of ours
sent now, from ours admitted: at most (the probe beyond it waits until it surely cannot hold
one more, :mod:`.silent`) and surely (ours go within it while a fixed window is supposed too).

A bucket full at most, refilling ``limit / window`` a second, holds for one of ours arriving
at ``a`` the least, over each of ours ``k`` that arrived at ``a_k``, of the quota plus the
refill since ``a_k``, less ours since (``k`` included). We know when ours were admitted, not
when they arrived: each one ``t_k`` to ``t_k`` plus its way there later. So the most it holds
takes each ``a_k`` at ``t_k`` and ours sent now arriving a margin later; what it surely holds
takes ours sent now arriving at once and each ``a_k`` at ``t_k`` plus its own way there, as
its answer's headers timed it (:attr:`.log.Entry.way`; the margin while it is in flight).

The margin (a window's 99th percentile of the way there) is no bound on one of ours that
took longer: once a cold opening burst (0.8 s on the way, later ones 10 ms) left the samples,
a margin of 0.05 s had the bucket hold 0.75 s of refill more than it did while the burst
bounded it (15 429s, a cold silent bucket at :45 paced to the most its probes allowed).

While a fixed window is supposed too, what a bucket charges over our estimates is bounded by
the probes it served (``Charge.paced``, :func:`.bounds.bucketed`): one sent while the bucket
as we count ours may hold it bounds it no lower than we count (:func:`telling`).

The most it charges, as paced, takes ours to arrive as late as their way there allows, as
what it surely holds does: one timing for both. Taken as admitted (the most under any timing,
``Charge.ceiling``: what refutes a bucket), a cold opening burst's 0.8 s put the bound a
probe had to pass 0.8 s of refill above what the bucket surely held: a probe beyond the one,
within the other, bounded nothing, ours paid for it, and the factor stayed where our pace put
it (a cold silent bucket at :00, :10, :20 and :50: 1.08-1.10x the ideal; 1.01-1.02x now).
Should ours have arrived sooner, the bucket refilled more since than we count while charging
up to that refill over all ours since: a few tokens of each probe's, never the whole burst's.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from .carry import carried, charged

__all__ = ["most", "reached", "surely", "telling"]


def reached(entry: Any, margin: float) -> float:
    """The most seconds ``entry`` took to reach the server: its own way there once its
    answer's headers timed it (:mod:`.latency`), else ``margin``."""
    way = getattr(entry, "way", None)
    return margin if way is None else way


def most(track: Any, now: float) -> float:
    """The most a token bucket of ``track``'s quota can hold for one of ours arriving within
    the margin from now, every one of ours the server counts charged
    (:func:`.carry.charged`)."""
    rate, last = track.limit / track.window, now + track.quota.margin
    bound, count, estimated = float(track.limit), 0, 0
    for entry in reversed(track.recent):
        if entry.live and not entry.refused:
            count += charged(track, entry)
            estimated += entry.estimate
            bound = min(bound, track.limit + rate * (last - entry.time) - count)
    if track.carry is None:
        return bound
    factor = count / estimated if track.quota.tokens and estimated else 1.0
    return min(bound, carried(track, last, factor) - count)


def surely(track: Any, now: float) -> float:
    """What a token bucket of ``track``'s quota surely holds for one of ours sent now: each
    of ours taken to arrive as late as its way there allows (ours folded into the carry, a
    margin late, as ours sent now: ``slack``)."""
    rate, margin, limit = track.limit / track.window, track.quota.margin, track.limit
    bound, count, estimated = float(limit), 0, 0
    for entry in reversed(track.recent):
        if entry.live and not entry.refused:
            count += charged(track, entry)
            estimated += entry.estimate
            bound = min(bound, limit + rate * (now - entry.time - reached(entry, margin)) - count)
    if track.carry is None:
        return bound
    factor = count / estimated if track.quota.tokens and estimated else 1.0
    return min(bound, carried(track, now + margin, factor) - count - track.slack())


def telling(track: Any, now: float, tokens: int) -> bool:
    """True unless ``track`` is a token quota whose minute still has room for ``tokens`` (a
    bucket of it holds the line back) and a probe of what it charges, served now, could not
    bound it below what we count (``Charge.paced``): the bucket, as we count ours, may hold
    it by more than the refill its way there (ours answered last: a probe's answer bounds the
    charge as of its own arrival) takes off the margin ahead. Sent anyway, one an answer
    apart, a cold silent bucket's probes bounded it at 1.13-1.15x where it charges our
    estimate, none lower than the last, until :118 (1.07x the ideal at :55)."""
    if not track.quota.tokens or track.fixed is None or not track.fixed.fits(now, tokens):
        return True
    margin = track.quota.margin
    way = next((e.way for e in reversed(track.recent) if getattr(e, "way", None) is not None),
               margin)
    return most(track, now) < tokens + track.limit / track.window * (margin - way)
