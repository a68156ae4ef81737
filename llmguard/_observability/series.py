"""Series: the counters of one combination of attribute values, with their attribute dicts
built once; the snapshot the observable instruments read; what a dropped layer leaves behind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .._core.events import CallRecord
from .conventions import provider_name
from .histogram import LatencyHistogram, MetricsSnapshot, MetricsStats

__all__ = ["Retired", "Series", "attributes", "snapshot_of", "stats_of"]

#: Counts kept per layer besides the series (cache outcomes, retries, fallbacks).
COUNTS = ("hit", "miss", "coalesced", "retries", "fallbacks")


class Series:
    """Counters and pre-built attribute dicts for one combination of attribute values."""

    __slots__ = ("model", "outcome", "calls", "cost", "attrs", "input_attrs", "output_attrs")

    def __init__(self, attrs: dict[str, Any], model: str | None, outcome: str) -> None:
        self.model, self.outcome, self.calls, self.cost = model, outcome, 0, 0.0
        self.attrs = attrs
        self.input_attrs = {**attrs, "gen_ai.token.type": "input"}
        # Embeddings produce no output tokens: no output sample at all (not a zero one).
        self.output_attrs = (None if attrs["gen_ai.operation.name"] == "embeddings"
                             else {**attrs, "gen_ai.token.type": "output"})


def attributes(layer: Any, known: CallRecord, model: str | None, response: str | None = None,
               error: str | None = None) -> dict[str, Any]:
    """The GenAI attributes of a call of ``layer`` (a Metrics): what the call's facts say
    (provider, operation, server), else the layer's settings."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": known.operation or layer.operation}
    # Required by the conventions: the call's (an integration's), the layer's, or inferred.
    attrs["gen_ai.provider.name"] = known.provider or layer.provider or provider_name(model)
    for name, value in (("gen_ai.request.model", model), ("gen_ai.response.model", response),
                        ("error.type", error)):
        if value is not None:
            attrs[name] = value
    if known.server is not None:
        attrs["server.address"], port = known.server
        if port is not None:
            attrs["server.port"] = port
    if layer.name is not None:
        attrs["llmguard.pipeline"] = layer.name
    if known.deployment is not None:  # the Router's deployment that answered
        attrs["llmguard.deployment"] = known.deployment
    return attrs


def snapshot_of(name: str | None, series: Iterable[Series], counts: Mapping[str, int],
                in_flight: int) -> MetricsSnapshot:
    calls: dict[tuple[str, str | None], int] = {}
    cost: dict[str | None, float] = {}
    for one in list(series):
        key = (one.outcome, one.model)
        calls[key] = calls.get(key, 0) + one.calls
        if one.cost:
            cost[one.model] = cost.get(one.model, 0.0) + one.cost
    cache = {result: counts[result] for result in ("hit", "miss", "coalesced")}
    return MetricsSnapshot(name, MappingProxyType(calls), in_flight, counts["retries"],
                           counts["fallbacks"], MappingProxyType(cache), MappingProxyType(cost))


class Retired:
    """The final counts of the Metrics layers of one pipeline name that were garbage collected:
    cumulative counters must not go backwards because a pipeline was dropped. Memory is one
    entry per series, however many layers came and went."""

    __slots__ = ("name", "neighbours", "_series", "_counts")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.neighbours: tuple[Any, ...] = ()  # their limiters' gauges died with them
        self._series: dict[tuple[str, str | None], Series] = {}
        self._counts = dict.fromkeys(COUNTS, 0)

    def add(self, series: Iterable[Series], counts: Mapping[str, int]) -> None:
        for one in list(series):
            mine = self._series.get((one.outcome, one.model))
            if mine is None:
                mine = self._series[(one.outcome, one.model)] = Series(
                    {"gen_ai.operation.name": ""}, one.model, one.outcome)
            mine.calls += one.calls
            mine.cost += one.cost
        for key in COUNTS:
            self._counts[key] += counts[key]

    def snapshot(self) -> MetricsSnapshot:
        return snapshot_of(self.name, self._series.values(), self._counts, 0)


def stats_of(series: Iterable[Series], latency: LatencyHistogram, counts: Mapping[str, int],
             in_flight: int, input_tokens: int, output_tokens: int,
             errors: Mapping[str, int]) -> MetricsStats:
    """The in-process :class:`MetricsStats` of one layer."""
    latency = latency.folded()
    by_outcome = dict.fromkeys(("success", "error", "rejected", "cancelled"), 0)
    for one in list(series):
        by_outcome[one.outcome] += one.calls
    hits = counts["hit"] + counts["coalesced"]
    lookups = hits + counts["miss"]
    return MetricsStats(
        calls=sum(by_outcome.values()),
        successes=by_outcome["success"],
        failures=by_outcome["error"] + by_outcome["rejected"],
        rejected=by_outcome["rejected"],
        cancelled=by_outcome["cancelled"],
        in_flight=in_flight,
        latency_mean=latency.total / latency.count if latency.count else None,
        latency_min=latency.min if latency.count else None,
        latency_max=latency.max if latency.count else None,
        latency_p50=latency.quantile(0.50),
        latency_p95=latency.quantile(0.95),
        latency_p99=latency.quantile(0.99),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        retries=counts["retries"],
        fallbacks=counts["fallbacks"],
        cache_hits=hits,
        cache_misses=counts["miss"],
        cache_hit_ratio=hits / lookups if lookups else None,
        errors=dict(errors),
    )
