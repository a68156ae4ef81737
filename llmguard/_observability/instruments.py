"""Observable llmguard.* instruments, one per name for every pipeline of a MeterProvider.

Every callback runs at collection time (a scrape, an export), so counts and state cost nothing
per call. Each reads the public ``snapshot()`` and ``neighbours`` of every live Metrics layer of
its provider; the pipeline is an attribute. Other layers' ``statistics()`` are read by the
field names ``LayerStats.GAUGES`` declares (the base of every llmguard layer's snapshot), so a
custom layer exposing e.g. ``limit`` and ``in_flight`` shows up on the dashboard too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._core.layer import label
from .._core.stats import LayerStats
from .conventions import CIRCUIT_STATES

if TYPE_CHECKING:
    from .histogram import MetricsSnapshot
    from .view import MetricsView

__all__ = ["observables"]

Points = Iterator[tuple[float, dict[str, str]]]


def _field(stats: Any, name: str) -> Any:
    assert name in LayerStats.GAUGES  # the declared names only
    return getattr(stats, name, None)


def _base(metrics: MetricsView) -> dict[str, str]:
    return {"llmguard.pipeline": metrics.name} if metrics.name else {}


def _layer_stats(metrics: MetricsView) -> Iterator[tuple[dict[str, str], Any]]:
    base = _base(metrics)
    for layer in list(metrics.neighbours):
        statistics = getattr(layer, "statistics", None)
        if statistics is None:
            continue
        try:
            stats = statistics()
        except Exception:  # a broken custom layer must not break the whole scrape
            continue
        yield {**base, "llmguard.layer": label(layer)}, stats


def _calls(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    for (outcome, model), count in snap.calls.items():
        attrs = {**_base(metrics), "llmguard.outcome": outcome}
        if model is not None:
            attrs["gen_ai.request.model"] = model
        yield count, attrs


def _cost(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    for model, usd in snap.cost.items():
        attrs = _base(metrics)
        if model is not None:
            attrs["gen_ai.request.model"] = model
        yield usd, attrs


def _in_flight(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    yield snap.in_flight, {**_base(metrics), "llmguard.layer": "metrics"}
    for attrs, stats in _layer_stats(metrics):
        value = _field(stats, "in_flight")
        if value is not None:
            yield value, attrs


def _gauge(name: str) -> Callable[[MetricsView, MetricsSnapshot], Points]:
    def read(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
        for attrs, stats in _layer_stats(metrics):
            value = _field(stats, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield value, attrs

    return read


def _circuit(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    for attrs, stats in _layer_stats(metrics):
        state = _field(stats, "state")
        if state is None:
            continue
        key = str(getattr(state, "value", state)).lower()
        if key in CIRCUIT_STATES:
            yield CIRCUIT_STATES[key], attrs


def _own_or_layer(own: str, name: str) -> Callable[[MetricsView, MetricsSnapshot], Points]:
    """A neighbour's count when a layer of that kind is in the pipeline, else the calls' own."""
    def read(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
        found = False
        for attrs, stats in _layer_stats(metrics):
            value = _field(stats, name)
            if isinstance(value, int):
                found = True
                yield value, attrs
        if not found:
            yield getattr(snap, own), {**_base(metrics), "llmguard.layer": "metrics"}

    return read


def _cache(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    found = False
    for attrs, stats in _layer_stats(metrics):
        counts = {result: _field(stats, name) for result, name in
                  (("hit", "hits"), ("miss", "misses"), ("coalesced", "coalesced"))}
        if isinstance(counts["hit"], int) and isinstance(counts["miss"], int):
            found = True
            for result, count in counts.items():
                if isinstance(count, int):
                    yield count, {**attrs, "llmguard.cache.result": result}
    if not found:  # no cache layer in sight: what the calls themselves said
        for result, count in snap.cache.items():
            yield count, {**_base(metrics), "llmguard.layer": "metrics",
                          "llmguard.cache.result": result}


def _rejected(metrics: MetricsView, snap: MetricsSnapshot) -> Points:
    # Disjoint reasons (every layer's ``rejected`` leaves out its ``timed_out``): a sum() over
    # reasons counts each refused call once.
    for attrs, stats in _layer_stats(metrics):
        for reason, name in (("rejected", "rejected"), ("timed_out", "timed_out")):
            value = _field(stats, name)
            if isinstance(value, int):
                yield value, {**attrs, "llmguard.reason": reason}


def _each(layers: Callable[[], Iterable[MetricsView]], read: Callable[[MetricsView, MetricsSnapshot], Points]
          ) -> list[Callable[[Any], Any]]:
    """A callback observing ``read`` over every live layer; points with the same attributes
    (two layers of one pipeline name) are summed, as the SDK keeps one point per attribute set."""
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> list[Observation]:
        total: dict[frozenset[tuple[str, str]], tuple[float, dict[str, str]]] = {}
        for metrics in layers():
            snap = metrics.snapshot()
            for value, attrs in read(metrics, snap):
                key = frozenset(attrs.items())
                previous = total.get(key)
                total[key] = (value if previous is None else previous[0] + value, attrs)
        return [Observation(value, attrs) for value, attrs in total.values()]

    return [callback]


def observables(layers: Callable[[], Iterable[MetricsView]], meter: Any) -> list[Any]:
    """Create the provider's observable instruments, reading every layer ``layers()`` lists."""
    counter = meter.create_observable_counter
    gauge = meter.create_observable_gauge
    updown = meter.create_observable_up_down_counter
    return [
        counter("llmguard.calls", _each(layers, _calls), unit="{call}",
                description="Calls by outcome (success, error, rejected, cancelled)"),
        counter("llmguard.cost", _each(layers, _cost), unit="USD",
                description="Spend on the provider, as priced by the integration (litellm) "
                            "or a Budget"),
        updown("llmguard.in_flight", _each(layers, _in_flight), unit="{call}",
               description="Calls in flight, per layer"),
        counter("llmguard.retries", _each(layers, _own_or_layer("retries", "retries")),
                unit="{retry}", description="Retries (attempts after the first)"),
        counter("llmguard.fallbacks", _each(layers, _own_or_layer("fallbacks", "fallbacks")),
                unit="{call}", description="Calls answered by a fallback"),
        counter("llmguard.cache.lookups", _each(layers, _cache), unit="{lookup}",
                description="Cache lookups by result (hit, miss, coalesced)"),
        counter("llmguard.admission.rejected", _each(layers, _rejected), unit="{call}",
                description="Calls refused by a limiter, by reason: rejected (queue full, too "
                            "large) or timed_out (waited max_wait); disjoint"),
        gauge("llmguard.concurrency.limit", _each(layers, _gauge("limit")), unit="{call}",
              description="Current concurrency limit"),
        updown("llmguard.queue.waiting", _each(layers, _gauge("waiting")), unit="{call}",
               description="Calls waiting for admission"),
        gauge("llmguard.rate_limit.requests_headroom",
              _each(layers, _gauge("requests_available")),
              unit="{request}", description="Requests still admissible in the current window"),
        gauge("llmguard.rate_limit.tokens_headroom",
              _each(layers, _gauge("tokens_available")),
              unit="{token}", description="Tokens still admissible in the current window"),
        gauge("llmguard.circuit.state", _each(layers, _circuit), unit="1",
              description="Circuit state: 0 closed, 1 half-open, 2 open"),
        *(gauge(f"llmguard.budget.{name}", _each(layers, _gauge(f"{name}_usd")), unit="USD",
                description=description) for name, description in (
            ("cap", "Budget cap for the current window"),
            ("spent", "Budget spent in the current window (settled calls)"),
            ("reserved", "Budget reserved by calls in flight"),
            ("remaining", "Budget a new call may still reserve without waiting"))),
    ]
