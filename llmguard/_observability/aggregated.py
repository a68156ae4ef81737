"""Histograms kept in this process and handed to the SDK's Prometheus reader at collection.

An OpenTelemetry SDK histogram record costs about 16 µs (attribute checks, a hash of the
attribute set, a lock, the aggregation), and a served call makes three: a tenth of the
gateway's CPU per request. OpenTelemetry has no observable histogram, so the gateway's provider
(:func:`prometheus_provider`) keeps these points itself: a record is a dict lookup by the
identity of the attribute dict (a Metrics layer builds one per series and reuses it) and a
bisect. At collection its reader adds them to what the SDK collected, in the llmguard scope,
as the cumulative explicit-bucket points the SDK would have made: same names, units,
boundaries, labels and values on ``/metrics``.

Records and collection must run on one thread (the gateway records and serves ``/metrics`` on
its event loop); ``serve_metrics``, which collects on a thread of its own, keeps the SDK's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .conventions import SCOPE
from .histogram import LatencyHistogram
from .registry import aggregate_histograms

__all__ = ["AggregatedHistogram", "Histograms", "prometheus_provider"]

#: Attribute dicts remembered by identity before the memo starts afresh (a caller building a
#: new dict per record still records correctly, through the attribute set).
MEMO = 4096


class AggregatedHistogram:
    """The ``record(amount, attributes)`` of an SDK histogram, aggregated here."""

    __slots__ = ("name", "unit", "description", "bounds", "_points", "_memo")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        #: Attribute set -> (its attributes, its point).
        self._points: dict[frozenset[tuple[str, Any]],
                           tuple[dict[str, Any], LatencyHistogram]] = {}
        #: ``id(attributes)`` -> (the dict, kept alive so the id stays its own; its point).
        self._memo: dict[int, tuple[Mapping[str, Any] | None, LatencyHistogram]] = {}

    def record(self, amount: float, attributes: Mapping[str, Any] | None = None,
               context: Any = None) -> None:
        if not amount >= 0:  # the SDK drops negative (and NaN) histogram values too
            return
        memo = self._memo.get(id(attributes))
        point = self._point(attributes) if memo is None else memo[1]
        point.add(amount)

    def _point(self, attributes: Mapping[str, Any] | None) -> LatencyHistogram:
        attrs = dict(attributes or {})
        key = frozenset(attrs.items())
        found = self._points.get(key)
        if found is None:
            found = self._points[key] = (attrs, LatencyHistogram(self.bounds))
        if len(self._memo) >= MEMO:
            self._memo.clear()
        self._memo[id(attributes)] = (attributes, found[1])
        return found[1]

    def metric(self, start: int, now: int) -> Any:
        """The SDK's export form of every point (None before the first record)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
        )

        if not self._points:
            return None
        points = [HistogramDataPoint(attributes=dict(attrs), start_time_unix_nano=start,
                                     time_unix_nano=now, count=point.count, sum=point.total,
                                     bucket_counts=list(point.counts),
                                     explicit_bounds=list(self.bounds), min=point.min,
                                     max=point.max)
                  for attrs, point in list(self._points.values())]
        return Metric(self.name, self.description, self.unit,
                      Histogram(points, AggregationTemporality.CUMULATIVE))


class Histograms:
    """The histograms of one provider: made by ``create_histogram``'s signature, added to each
    collection by :meth:`add_to`."""

    __slots__ = ("_histograms", "_start")

    def __init__(self) -> None:
        self._histograms: dict[str, AggregatedHistogram] = {}
        self._start = time.time_ns()

    def create_histogram(self, name: str, unit: str = "", description: str = "",
                         explicit_bucket_boundaries_advisory: Sequence[float] = ()
                         ) -> AggregatedHistogram:
        found = self._histograms.get(name)
        if found is None:
            found = self._histograms[name] = AggregatedHistogram(
                name, unit, description, explicit_bucket_boundaries_advisory)
        return found

    def add_to(self, data: Any) -> Any:
        """``data`` (the SDK's ``MetricsData``) with these histograms in the llmguard scope."""
        from dataclasses import replace

        from opentelemetry.sdk.metrics.export import ScopeMetrics
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        now = time.time_ns()
        mine = [m for m in (h.metric(self._start, now) for h in self._histograms.values()) if m]
        if data is None or not mine or not data.resource_metrics:
            return data
        first, *rest = data.resource_metrics
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == SCOPE:
                scopes[i] = replace(scope, metrics=[*scope.metrics, *mine])
                break
        else:
            scopes.append(ScopeMetrics(InstrumentationScope(SCOPE), mine, ""))
        return replace(data, resource_metrics=[replace(first, scope_metrics=scopes), *rest])


def prometheus_provider(registry: Any) -> Any:
    """An SDK ``MeterProvider`` exporting to the Prometheus ``registry``, whose Metrics layers'
    histograms are kept by :class:`Histograms` (records and scrapes on one thread)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    histograms = Histograms()

    class Reader(PrometheusMetricReader):  # type: ignore[misc]
        def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000,
                             **kwargs: Any) -> None:
            super()._receive_metrics(histograms.add_to(metrics_data), timeout_millis, **kwargs)

    provider = MeterProvider(metric_readers=[Reader(registry=registry)])
    aggregate_histograms(provider, histograms)
    return provider
