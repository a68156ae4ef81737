"""What a token bucket of a quota holds from ours older than the history a track keeps.

A learned-shape track (:class:`.auto.AutoTrack`) keeps ours of the last two windows, and
every bound of a bucket of the quota is drawn from them: the least, over each of ours, of the
quota plus the refill since it, less ours since. Ours paced at the refill since an opening
burst keep that burst's deficit, and the bound forgot it once the burst left the history: a
silent bucket started at :55 with 6x the quota at once took a burst of 25 into a bucket
holding 14 two windows later (43 429s, the circuit breaker opened, 43 calls failed).

So what leaves the history is folded here, for a bucket full at the start charging any factor
over our estimates (what the server charges is a guess while it says nothing, :mod:`.charge`):
at our bare estimates alone, a level that filled up while one charging 1.11x did not lost the
difference (4 429s, a strict bucket at :00 with 6x the quota). A bucket charging ``f`` holds
``limit + rate * (t - t_s) - f * (ours from s on)`` at most, for each of ours ``s``: a line in
``f`` per one of ours, of which only those least somewhere in ``1 <= f <= MOST`` are kept (a
lower envelope: a few lines, whatever the history).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MOST", "Carry", "carried", "charged", "fold"]

#: The highest factor a carry answers for (:mod:`.charge` keeps its factor within 3).
MOST = 3.0


class Carry:
    """Ours that left a track's history, as a bucket of ``limit`` refilling ``rate`` a
    second holds them, full at the first, charging any factor over our units."""

    __slots__ = ("spent", "lines")

    def __init__(self) -> None:
        #: Our units folded; ``(units before it, time)`` of each of ours that may bound it.
        self.spent, self.lines = 0.0, []

    def fold(self, at: float, units: float, rate: float) -> None:
        """One of ours admitted at ``at`` for ``units`` (its bare estimate) left the history."""
        lines, new = self.lines, (self.spent, at)
        self.spent += units
        if lines and _cross(lines[-1], new, rate) <= 1.0:
            return  # the bucket had not refilled what ours took since: it bounds nothing more
        while len(lines) >= 2 and _cross(lines[-1], new, rate) >= _cross(lines[-2], lines[-1],
                                                                            rate):
            lines.pop()
        lines.append(new)
        while len(lines) >= 2 and _cross(lines[0], lines[1], rate) >= MOST:
            lines.pop(0)

    def held(self, last: float, limit: float, rate: float, factor: float = 1.0) -> float:
        """The most a bucket charging ``factor`` times our estimates holds at ``last`` from
        ours folded (ours still in the history not taken off)."""
        spent = self.spent
        return min(limit + rate * (last - t) - factor * (spent - before)
                   for before, t in self.lines)

    def most(self, last: float, limit: float, rate: float, estimated: float,
             taken: float) -> float:
        """The highest factor at which a bucket could hold ours in the history since, of
        ``estimated`` (bare) and ``taken`` (rounding), at ``last`` (inf: any)."""
        spent, bound = self.spent, float("inf")
        for before, t in self.lines:
            units = spent - before + estimated
            if units > 0:
                bound = min(bound, (limit + rate * (last - t) - taken) / units)
        return bound


def _cross(old: tuple[float, float], new: tuple[float, float], rate: float) -> float:
    """The factor below which the bound from ``new`` (one of ours after ``old``) is the
    lower: what the bucket refilled between them over what ours took meanwhile."""
    units = new[0] - old[0]
    return rate * (new[1] - old[1]) / units if units > 0 else float("inf")


def carried(track: Any, last: float, factor: float = 1.0) -> float:
    """The most a bucket of ``track``'s quota charging ``factor`` times our estimates holds at
    ``last`` from ours that left its history (inf: none did): every bound of a bucket drawn
    from the history takes the least of it and its own, less ours in the history."""
    carry = track.carry
    if carry is None:
        return float("inf")
    return carry.held(last, track.limit, track.limit / track.window,
                      factor if track.quota.tokens else 1.0)


def fold(track: Any, entry: Any) -> None:
    """``entry`` leaves ``track``'s history (``recent``): folded into its carry."""
    if entry.live and not entry.refused:
        if track.carry is None:
            track.carry = Carry()
        track.carry.fold(entry.time, entry.estimate if track.quota.tokens else 1,
                         track.limit / track.window)


def charged(track: Any, entry: Any) -> int:
    """What a bucket of ``track``'s quota counts ``entry`` at most: as we count it, or at the
    most such a bucket charges over our estimates (``track.ceiling``, ``Charge.paced``: what
    the probes it served allow, :mod:`.refuted`) while a fixed window is supposed too. Our
    count is kept at what either may charge (a fixed window's bound stays high until its
    minute fills): paced at it, each probe beyond the bucket brought the factor down ~0.4%
    (1.10x the ideal)."""
    units = track.weight(entry)
    ceiling = track.ceiling
    if ceiling < math.inf and track.shape.kind == "unknown":
        return min(units, math.ceil(entry.estimate * ceiling - 1e-9))
    return units
