"""What a batch run costs at batch prices, and what the same answers would have cost online.

Prices come from litellm's model cost map when litellm is installed (imported on first use,
with its bundled map: never fetched from the network). It lists batch prices for many models
(``input_cost_per_token_batches``); where it lists only the online price, the batch price is
half of it, the discount OpenAI and Anthropic document for their batch APIs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Bill"]

#: Batch price as a fraction of the online price where the cost map has no batch price.
BATCH_DISCOUNT = 0.5


def _prices(model: str) -> tuple[float, float, float, float] | None:
    """(input, output) per token online, then at batch prices; None when unpriced."""
    try:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm
    except ImportError:
        return None
    entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/")[-1])
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
    _cache: dict[str, Any] = field(default_factory=dict)

    def add(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Add one answer; returns its cost at batch prices (None when unpriced)."""
        if model not in self._cache:
            self._cache[model] = _prices(model)
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
