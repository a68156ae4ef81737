"""What a token bucket of a quota holds from ours older than the history a track keeps.

A learned-shape track (:class:`.auto.AutoTrack`) keeps ours of the last two windows, and
every bound of a bucket of the quota is drawn from them: the least, over each of ours, of the
quota plus the refill since it, less ours since. Ours paced at the refill since an opening
burst keep that burst's deficit, and the bound forgot it once the burst left the history: a
silent bucket started at :55 with 6x the quota at once took a burst of 25 into a bucket
holding 14 two windows later (43 429s, the circuit breaker opened, 43 calls failed).

So what leaves the history is folded here: the level a bucket full at the start holds just
after it, for each of a ladder of factors over our estimates (``FACTORS``: what the server
charges is a guess while it says nothing, :mod:`.charge`). At our bare estimates alone, a
level that filled up while one charging 1.11x did not lost the difference: 4 429s, a strict
bucket at :00 with 6x the quota. A factor between two rungs reads the higher (holding less).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["FACTORS", "Carry", "carried", "fold"]

#: The factors a carry keeps a level at (:mod:`.charge` keeps its factor within 1 and 3).
FACTORS = tuple(1.0 + k / 200 for k in range(81)) + (1.45, 1.5, 1.6, 1.8, 2.0, 2.5, 3.0)


class Carry:
    """Ours that left a track's history, as a bucket of ``limit`` refilling ``rate`` a
    second holds them (full at the first), charging each of ``FACTORS`` times our units."""

    __slots__ = ("at", "levels")

    def __init__(self, at: float, limit: float) -> None:
        #: The last one folded, and each factor's level just after it.
        self.at, self.levels = at, [float(limit)] * len(FACTORS)

    def fold(self, at: float, units: float, limit: float, rate: float) -> None:
        """One of ours admitted at ``at`` for ``units`` (its bare estimate) left the history."""
        refill, levels = (at - self.at) * rate, self.levels
        for i, factor in enumerate(FACTORS):
            level = levels[i] + refill
            levels[i] = (limit if level > limit else level) - factor * units
        self.at = at

    def held(self, last: float, rate: float, factor: float = 1.0) -> float:
        """The most a bucket charging ``factor`` times our estimates holds at ``last`` from
        ours folded (the next rung's: ours still in the history not taken off)."""
        rung = min(bisect.bisect_left(FACTORS, factor - 1e-9), len(FACTORS) - 1)
        return self.levels[rung] + (last - self.at) * rate

    def most(self, last: float, rate: float, estimated: float, taken: float) -> float:
        """The highest factor at which a bucket could hold ours in the history since, of
        ``estimated`` (bare) and ``taken`` (rounding), at ``last``: the first rung that could
        not (inf: every rung could)."""
        refill = (last - self.at) * rate
        for factor, level in zip(FACTORS, self.levels):
            if level + refill - factor * estimated - taken < 0:
                return factor
        return float("inf")


def carried(track: Any, last: float, factor: float = 1.0) -> float:
    """The most a bucket of ``track``'s quota charging ``factor`` times our estimates holds at
    ``last`` from ours that left its history (inf: none did): every bound of a bucket drawn
    from the history takes the least of it and its own, less ours in the history."""
    carry = track.carry
    if carry is None:
        return float("inf")
    return carry.held(last, track.limit / track.window, factor if track.quota.tokens else 1.0)


def fold(track: Any, entry: Any) -> None:
    """``entry`` leaves ``track``'s history (``recent``): folded into its carry."""
    if entry.live and not entry.refused:
        if track.carry is None:
            track.carry = Carry(entry.time, float(track.limit))
        track.carry.fold(entry.time, entry.estimate if track.quota.tokens else 1,
                         track.limit, track.limit / track.window)
