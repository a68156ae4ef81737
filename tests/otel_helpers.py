"""Reading what the OpenTelemetry SDK's in-memory reader collected (shared by several suites)."""

from __future__ import annotations

from typing import Any


def collect(reader: Any) -> dict[str, Any]:
    """Metric name -> metric, from an ``InMemoryMetricReader``."""
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = metric
    return found
