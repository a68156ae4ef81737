"""``LayerStats``: the base of every layer's ``statistics()`` snapshot, and the gauge fields
:class:`llmguard.Metrics` exports from any of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .public import public

__all__ = ["LayerStats"]


@public
@dataclass(frozen=True, slots=True)
class LayerStats:
    """A frozen snapshot of one layer's state and counters (subclasses add the fields).

    Metrics exports, from each neighbouring layer's snapshot, the fields named in
    :attr:`GAUGES` that it has (a custom layer's statistics show up on the dashboard by using
    these names): a field a snapshot lacks is simply not that layer's concern.
    """

    #: Field name -> the ``llmguard.*`` instrument Metrics exports it as.
    GAUGES: ClassVar[dict[str, str]] = {
        "in_flight": "llmguard.in_flight",
        "limit": "llmguard.concurrency.limit",
        "waiting": "llmguard.queue.waiting",
        "requests_available": "llmguard.rate_limit.requests_headroom",
        "tokens_available": "llmguard.rate_limit.tokens_headroom",
        "rejected": "llmguard.admission.rejected",
        "timed_out": "llmguard.admission.rejected",
        "retries": "llmguard.retries",
        "fallbacks": "llmguard.fallbacks",
        "hits": "llmguard.cache.lookups",
        "misses": "llmguard.cache.lookups",
        "coalesced": "llmguard.cache.lookups",
        "state": "llmguard.circuit.state",
        "cap_usd": "llmguard.budget.cap",
        "spent_usd": "llmguard.budget.spent",
        "reserved_usd": "llmguard.budget.reserved",
        "remaining_usd": "llmguard.budget.remaining",
    }
