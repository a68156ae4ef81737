"""A Budget's statistics: spend, reservations and room for one key's current window."""

from __future__ import annotations

from dataclasses import dataclass

from ..._core.public import public
from ..._core.stats import LayerStats

__all__ = ["BudgetStats"]


@public
@dataclass(frozen=True, slots=True)
class BudgetStats(LayerStats):
    """One key's budget in its current window (USD), and the layer's counters."""

    #: The cap for the window.
    cap_usd: float
    #: Settled spend in the window (at the layer's prices, rounded up to the nano-dollar).
    spent_usd: float
    #: Maximum cost of the calls in flight, not settled yet.
    reserved_usd: float
    #: ``cap - spent - reserved``: the most a new call may cost now without waiting.
    remaining_usd: float
    #: The window's label (``"2026-12-06"``; ``"total"`` without ``per``).
    window: str
    #: Unix time the window ends (None for a total).
    resets_at: float | None
    #: Attempts of this layer in flight (holding a reservation), over all keys.
    in_flight: int
    #: Calls waiting for room, over all keys.
    waiting: int
    #: Attempts admitted so far.
    admitted: int
    #: Calls refused (BudgetExceeded, or a model without a price).
    rejected: int
    #: Reservations given back whole: the attempt never reached the provider, or it answered
    #: with an error, which is not billed.
    refunds: int
    #: Answers that cost more than their reservation (input beyond the prompt bound: images,
    #: audio), the only way spend can pass the cap.
    overruns: int
