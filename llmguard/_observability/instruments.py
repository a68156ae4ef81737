"""Observable llmguard.* instruments and spans for the Metrics layer.

Every callback runs at collection time (a scrape, an export), so counts and state cost nothing
per call. Other layers' ``statistics()`` are read by duck typing: the field names below are the
ones llmguard's layers use, with a few tolerated aliases, so a custom layer exposing e.g.
``limit`` and ``in_flight`` shows up on the dashboard too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._core.call import Call
from .._core.call import label

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["callbacks", "detach_span", "end_span", "error_type", "start_span"]

#: Circuit states as numbers for a gauge (0 closed, 1 half-open, 2 open).
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def _field(stats: Any, *names: str) -> Any:
    for name in names:
        value = getattr(stats, name, None)
        if value is not None:
            return value
    return None


def _layer_stats(metrics: Metrics) -> Iterator[tuple[dict[str, str], Any]]:
    base = {"llmguard.pipeline": metrics.name} if metrics.name else {}
    for layer in list(metrics.neighbours):
        statistics = getattr(layer, "statistics", None)
        if statistics is None:
            continue
        try:
            stats = statistics()
        except Exception:  # a broken custom layer must not break the whole scrape
            continue
        yield {**base, "llmguard.layer": label(layer)}, stats


def callbacks(metrics: Metrics, meter: Any) -> list[Any]:
    """Create the observable instruments reading ``metrics`` and its neighbours."""
    from opentelemetry.metrics import Observation

    def each(fn: Callable[[], Iterator[tuple[float, dict[str, str]]]]) -> Callable[[Any], Any]:
        def callback(options: Any) -> list[Observation]:
            return [Observation(value, attrs) for value, attrs in fn()]

        return [callback]

    base = {"llmguard.pipeline": metrics.name} if metrics.name else {}

    def calls() -> Iterator[tuple[float, dict[str, str]]]:
        for series in list(metrics._series.values()):
            attrs = {**base, "llmguard.outcome": series.outcome}
            if series.model is not None:
                attrs["gen_ai.request.model"] = series.model
            yield series.calls, attrs

    def in_flight() -> Iterator[tuple[float, dict[str, str]]]:
        yield metrics._in_flight, {**base, "llmguard.layer": "metrics"}
        for attrs, stats in _layer_stats(metrics):
            value = _field(stats, "in_flight")
            if value is not None:
                yield value, attrs

    def gauge(*names: str) -> Callable[[], Iterator[tuple[float, dict[str, str]]]]:
        def read() -> Iterator[tuple[float, dict[str, str]]]:
            for attrs, stats in _layer_stats(metrics):
                value = _field(stats, *names)
                if isinstance(value, (int, float)):
                    yield value, attrs

        return read

    def headroom() -> Iterator[tuple[float, dict[str, str]]]:
        for attrs, stats in _layer_stats(metrics):
            for kind, names in (("requests", ("requests_available", "requests_remaining")),
                                ("tokens", ("tokens_available", "tokens_remaining"))):
                value = _field(stats, *names)
                if isinstance(value, (int, float)):
                    yield value, {**attrs, "llmguard.quota": kind}

    def circuit() -> Iterator[tuple[float, dict[str, str]]]:
        for attrs, stats in _layer_stats(metrics):
            state = _field(stats, "state")
            if state is None:
                continue
            key = str(getattr(state, "value", state)).lower()
            if key in CIRCUIT_STATES:
                yield CIRCUIT_STATES[key], attrs

    def own_or_layer(own: Callable[[], int], *names: str):  # type: ignore[no-untyped-def]
        def read() -> Iterator[tuple[float, dict[str, str]]]:
            found = False
            for attrs, stats in _layer_stats(metrics):
                value = _field(stats, *names)
                if isinstance(value, int):
                    found = True
                    yield value, attrs
            if not found:
                yield own(), {**base, "llmguard.layer": "metrics"}

        return read

    def cache() -> Iterator[tuple[float, dict[str, str]]]:
        found = False
        for attrs, stats in _layer_stats(metrics):
            counts = {result: _field(stats, name) for result, name in
                      (("hit", "hits"), ("miss", "misses"), ("coalesced", "coalesced"))}
            if isinstance(counts["hit"], int) and isinstance(counts["miss"], int):
                found = True
                for result, count in counts.items():
                    if isinstance(count, int):
                        yield count, {**attrs, "llmguard.cache.result": result}
        if not found:  # no cache layer in sight: what the calls' notes said
            for result, count in metrics._cache.items():
                yield count, {**base, "llmguard.layer": "metrics", "llmguard.cache.result": result}

    def rejected() -> Iterator[tuple[float, dict[str, str]]]:
        for attrs, stats in _layer_stats(metrics):
            for reason, name in (("rejected", "rejected"), ("timed_out", "timed_out")):
                value = _field(stats, name)
                if isinstance(value, int):
                    yield value, {**attrs, "llmguard.reason": reason}

    make = meter.create_observable_counter
    gauge_ = meter.create_observable_gauge
    updown = meter.create_observable_up_down_counter
    return [
        make("llmguard.calls", each(calls), unit="{call}", description="Calls by outcome"),
        updown("llmguard.in_flight", each(in_flight), unit="{call}",
               description="Calls in flight, per layer"),
        make("llmguard.retries", each(own_or_layer(lambda: metrics._retries, "retries")),
             unit="{retry}", description="Retries (attempts after the first)"),
        make("llmguard.fallbacks", each(own_or_layer(lambda: metrics._fallbacks, "fallbacks")),
             unit="{call}", description="Calls answered by a fallback"),
        make("llmguard.cache.lookups", each(cache), unit="{lookup}",
             description="Cache lookups by result (hit, miss, coalesced)"),
        make("llmguard.admission.rejected", each(rejected), unit="{call}",
             description="Calls refused by a limiter (queue full, too large, timed out)"),
        gauge_("llmguard.concurrency.limit", each(gauge("limit")), unit="{call}",
               description="Current concurrency limit"),
        updown("llmguard.queue.waiting", each(gauge("waiting")), unit="{call}",
               description="Calls waiting for admission"),
        gauge_("llmguard.rate_limit.headroom", each(headroom), unit="1",
               description="Requests or tokens still admissible in the current window"),
        gauge_("llmguard.circuit.state", each(circuit), unit="1",
               description="Circuit state: 0 closed, 1 half-open, 2 open"),
    ]


def start_span(metrics: Metrics, call: Call) -> tuple[Any, Any]:
    """Start a GenAI client span (``chat {model}``) and make it current for inner layers."""
    from opentelemetry import context, trace

    model = call.model or metrics.model
    name = f"{metrics.operation} {model}" if model else metrics.operation
    attrs = metrics._series_for(model, None, "success").duration_attrs
    tracer = metrics._tracer
    span = tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attrs)  # type: ignore[union-attr]
    # One child span per attempt: every attempt (Retry's included) invokes call.fn, so wrapping
    # it here needs no layer of its own. Streams keep only the call span.
    fn = call.fn

    def attempt(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if hasattr(type(result), "__anext__"):
            return result
        return _attempt_span(tracer, name, {**attrs, "llmguard.attempt": call.attempt}, result)

    call.fn = attempt
    return span, context.attach(trace.set_span_in_context(span))


async def _attempt_span(tracer: Any, name: str, attrs: dict[str, Any], result: Any) -> Any:
    from opentelemetry import trace

    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attrs):
        return await result


def detach_span(started: tuple[Any, Any]) -> tuple[Any, None]:
    """Stop the span being current here (it is ended later, when its stream ends)."""
    from opentelemetry import context

    span, token = started
    context.detach(token)
    return span, None


def end_span(started: tuple[Any, Any], call: Call, exc: BaseException | None) -> None:
    """Annotate the span with what the layers learned (retries, cache, rejection) and end it."""
    from opentelemetry.trace import Status, StatusCode

    from .._core.errors import AdmissionError

    span, token = started
    if token is not None:
        detach_span(started)
    notes = call.notes or {}
    span.set_attribute("llmguard.retries", int(notes.get("retries") or 0))
    for key in ("cache", "fallback", "rejected_by", "delayed_by"):
        if notes.get(key) is not None:
            span.set_attribute(f"llmguard.{key}", str(notes[key]))
    usage = call.usage
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    if isinstance(exc, Exception):
        span.set_attribute("error.type", error_type(exc))
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        if isinstance(exc, AdmissionError) and "rejected_by" not in notes:
            span.set_attribute("llmguard.rejected_by", type(exc).__name__)
    elif exc is not None:
        span.set_attribute("llmguard.outcome", "cancelled")
    span.end()


def error_type(exc: BaseException) -> str:
    """The ``error.type`` attribute: the exception's qualified class name (``llmguard.QueueFull``)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
