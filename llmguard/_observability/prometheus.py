"""``serve_metrics``: a Prometheus ``/metrics`` endpoint fed by the OpenTelemetry SDK (extra ``otel``)."""

from __future__ import annotations

from typing import Any

from .._core.check import number, text
from .._core.public import public

__all__ = ["MetricsServer", "serve_metrics"]


@public
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it and shuts the meter provider down."""

    __slots__ = ("meter_provider", "addr", "port", "_server", "_thread", "_reader")

    def __init__(self, meter_provider: Any, reader: Any, server: Any, thread: Any) -> None:
        #: The SDK ``MeterProvider`` whose metrics are served (pass it to ``Metrics``).
        self.meter_provider = meter_provider
        self.addr, self.port = server.server_address[:2]
        self._server, self._thread, self._reader = server, thread, reader

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.meter_provider.shutdown()

    def __repr__(self) -> str:
        return f"<MetricsServer http://{self.addr}:{self.port}/metrics>"


def serve_metrics(port: int = 9464, addr: str = "127.0.0.1", *, set_global: bool = True
                  ) -> MetricsServer:
    """Serve OpenTelemetry metrics for Prometheus at ``http://{addr}:{port}/metrics``.

    Creates an SDK ``MeterProvider`` with a ``PrometheusMetricReader`` and, with ``set_global``
    (the default), installs it as the global provider, so every ``Metrics`` layer built without
    ``meter_provider=`` reports there. ``port=0`` picks a free port (see ``.port``). Needs the
    ``otel`` extra: ``pip install 'llmguard[otel]'``.
    """
    number("port", port, integer=True, low_open=False, high=65535, hint=" (0 picks a free one)")
    text("addr", addr, hint="; e.g. '127.0.0.1', or '0.0.0.0' for every interface")
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ImportError(
            f"serve_metrics needs the OpenTelemetry SDK and Prometheus exporter ({exc.name} is "
            "missing): pip install 'llmguard[otel]'"
        ) from exc
    # A registry of our own, so two servers (or tests) never collide in the global one.
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    server, thread = start_http_server(port, addr, registry=registry)
    if set_global:
        metrics.set_meter_provider(provider)
    return MetricsServer(provider, reader, server, thread)
