"""What a batch run costs at batch prices, and what the same answers would have cost online.

Prices come from litellm's model cost map when litellm is installed: its bundled JSON file is
read directly (importing litellm for a price table costs seconds, and may try the network). It
lists batch prices for many models
(``input_cost_per_token_batches``); where it lists only the online price, the batch price is
half of it, the discount OpenAI and Anthropic document for their batch APIs.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..._admission.budget.prices import BATCH_DISCOUNT

__all__ = ["Bill", "budget_prices"]

#: litellm's bundled cost map, beside its package.
COST_MAP = "model_prices_and_context_window_backup.json"


@functools.cache
def _cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = os.path.join(os.path.dirname(spec.origin), COST_MAP)
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return {}


def budget_prices(budget: Any) -> Callable[[str], tuple[float, float, float, float] | None]:
    """A Bill's prices from a Budget's (``--max-cost``): the run's records and summary then
    say what its cap counted."""
    def prices(model: str) -> tuple[float, float, float, float] | None:
        try:
            online, batch = budget.price(model), budget.price(model, batch=True)
        except LookupError:
            return None
        return online[0] / 1e6, online[1] / 1e6, batch[0] / 1e6, batch[1] / 1e6

    return prices


def _prices(model: str) -> tuple[float, float, float, float] | None:
    """(input, output) per token online, then at batch prices; None when unpriced."""
    costs = _cost_map()
    entry = costs.get(model) or costs.get(model.split("/")[-1])
    if not entry or entry.get("input_cost_per_token") is None:
        return None
    online_in = float(entry["input_cost_per_token"])
    online_out = float(entry.get("output_cost_per_token") or 0.0)
    batch_in = entry.get("input_cost_per_token_batches")
    batch_out = entry.get("output_cost_per_token_batches")
    return (online_in, online_out,
            float(batch_in) if batch_in is not None else online_in * BATCH_DISCOUNT,
            float(batch_out) if batch_out is not None else online_out * BATCH_DISCOUNT)


@dataclass(slots=True)
class Bill:
    """Running totals of a batch run's cost; models without a price are listed, not guessed."""

    batch: float = 0.0
    online: float = 0.0
    unpriced: set[str] = field(default_factory=set)
    #: ``model -> (input, output online, input, output in a batch)`` per token, or None when
    #: unpriced; default: litellm's cost map.
    prices: Callable[[str], tuple[float, float, float, float] | None] = _prices
    _cache: dict[str, Any] = field(default_factory=dict)

    def add(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Add one answer; returns its cost at batch prices (None when unpriced)."""
        if model not in self._cache:
            self._cache[model] = self.prices(model)
        prices = self._cache[model]
        if prices is None:
            self.unpriced.add(model)
            return None
        online_in, online_out, batch_in, batch_out = prices
        cost = input_tokens * batch_in + output_tokens * batch_out
        self.batch += cost
        self.online += input_tokens * online_in + output_tokens * online_out
        return cost

    def summary(self) -> str:
        """One line for the run's summary."""
        parts = []
        if self.batch or not self.unpriced:
            saved = f", saved ${self.online - self.batch:,.4f}" if self.online else ""
            parts.append(f"${self.batch:,.4f} at batch prices (online: ${self.online:,.4f}"
                         f"{saved})")
        if self.unpriced:
            parts.append(f"not priced: {', '.join(sorted(self.unpriced))} (unknown to litellm's "
                         "cost map)")
        return "; ".join(parts)
