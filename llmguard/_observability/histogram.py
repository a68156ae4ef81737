"""In-process call statistics in constant memory: fixed log-scale latency buckets.

A reservoir would need random numbers and a sort per snapshot; HdrHistogram-style fixed buckets
cost one bisect per call, use ~2 KB forever, and bound the quantile error to the bucket
width (4 %), which is plenty for p50/p95/p99 of LLM latencies.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from .._core.public import public
from .._core.stats import LayerStats

__all__ = ["LatencyHistogram", "MetricsSnapshot", "MetricsStats"]

_GROWTH = 1.04  # each bucket is 4 % wider than the previous one
_LOWEST = 1e-5  # 10 µs: faster calls share the first bucket
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(1e4 / _LOWEST) / _LOG_GROWTH) + 2  # up to ~3 hours, then the last bucket
#: Upper edge of each bucket but the last (which is unbounded); bisect beats a log per call.
_EDGES = [_LOWEST * _GROWTH**i for i in range(_BUCKETS - 1)]


class LatencyHistogram:
    """Counts of values in buckets (by default fixed log-scale ones for durations), plus exact
    min, max and sum. ``edges``: the upper edge of each bucket but the last (unbounded)."""

    __slots__ = ("edges", "first", "counts", "count", "total", "min", "max", "pending")

    def __init__(self, edges: Sequence[float] = _EDGES) -> None:
        self.edges = edges
        #: The first bucket's upper edge: a value at most this needs no bisect (a cache hit
        #: answered in microseconds, below the default 10 µs; bisect_left's 10 comparisons
        #: cost about as much as the rest of a hit's counting).
        self.first = edges[0] if edges else math.inf
        #: Values per bucket; bucket ``i`` holds values up to ``edges[i]``.
        self.counts = [0] * (len(edges) + 1)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0
        #: Values added in a batch (:meth:`fold`): the fields above count them once folded.
        self.pending: list[float] = []

    def add(self, seconds: float) -> None:
        self.counts[0 if seconds <= self.first else bisect_left(self.edges, seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def fold(self) -> None:
        """Count the values :attr:`pending` holds, in order, as :meth:`add` would have: a layer
        that adds one a call (:class:`~llmguard.Metrics`) appends it there and folds in batches
        in its own thread, a loop of one frame and C calls instead of the stores of each add."""
        values = self.pending
        if not values:
            return
        counts, edges, first = self.counts, self.edges, self.first
        for seconds in values:
            counts[0 if seconds <= first else bisect_left(edges, seconds)] += 1
        self.count += len(values)
        self.total = sum(values, self.total)  # (in order, as ``add``'s sums)
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        values.clear()

    def folded(self) -> LatencyHistogram:
        """This histogram with what is :attr:`pending` counted: a copy, so a reader (in any
        thread) never changes what the writer is adding to."""
        pending = list(self.pending)  # (one C call: whole, whatever the writer does)
        if not pending:
            return self
        copy = LatencyHistogram(self.edges)
        copy.counts, copy.count, copy.total = list(self.counts), self.count, self.total
        copy.min, copy.max, copy.pending = self.min, self.max, pending
        copy.fold()
        return copy

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the values counted (:meth:`folded` counts all), the upper
        edge of its bucket clamped to [min, max]."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                edge = self.edges[index] if index < len(self.edges) else self.max
                return min(max(edge, self.min), self.max)
        return self.max  # pragma: no cover - rank <= count always stops the loop


@public
@dataclass(frozen=True, slots=True)
class MetricsStats(LayerStats):
    """A snapshot of a :class:`llmguard.Metrics` layer (latencies in seconds, None before data).

    Latencies cover completed calls (successes and errors), not cancelled ones.
    """

    calls: int
    successes: int
    failures: int
    #: Calls refused locally (``AdmissionError``: queue full, circuit open, too large).
    rejected: int
    cancelled: int
    in_flight: int
    latency_mean: float | None
    latency_min: float | None
    latency_max: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    input_tokens: int
    output_tokens: int
    retries: int
    fallbacks: int
    cache_hits: int
    cache_misses: int
    #: ``cache_hits / (hits + misses)`` (coalesced waiters count as hits), None without lookups.
    cache_hit_ratio: float | None
    #: Failures by ``error.type`` (exception class name).
    errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The counts a :class:`llmguard.Metrics` layer's observable instruments export, read at
    collection time (``Metrics.snapshot()``)."""

    #: The layer's pipeline name (``llmguard.pipeline``), or None.
    pipeline: str | None
    #: Calls by ``(outcome, gen_ai.request.model)``.
    calls: Mapping[tuple[str, str | None], int]
    in_flight: int
    retries: int
    fallbacks: int
    #: Cache outcomes the calls reported (``hit``, ``miss``, ``coalesced``).
    cache: Mapping[str, int]
    #: Spend in USD by ``gen_ai.request.model``.
    cost: Mapping[str | None, float]
