"""Metrics layer: OpenTelemetry GenAI metrics, llmguard resilience metrics, in-process stats.

Per call it does only what histograms need: up to three SDK records (duration, input and output
tokens) with attribute dicts built once per series and reused. Everything countable (calls by
outcome, in-flight, retries, cache lookups, cost, limits, headroom, circuit state) is an
observable instrument of the provider's shared set (``registry``), read at collection time from
``snapshot()`` and from the ``statistics()`` of the other layers of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._core.call import Call, loop_of, record_of
from .._core.check import text
from .._core.errors import AdmissionError
from .._core.events import CallRecord
from .._core.layer import Handler
from .._core.public import public
from .._core.stream import Stream
from .._core.tokens import extract_usage, field
from .._core.usage import Usage
from .conventions import (CHUNK_BUCKETS, DURATION_BUCKETS, FIRST_CHUNK_BUCKETS, SCOPE,
                          TOKEN_BUCKETS, error_leaf, error_type)
from .histogram import LatencyHistogram, MetricsSnapshot, MetricsStats
from .registry import instruments_for
from .series import COUNTS, Series, attributes, snapshot_of, stats_of
from .spans import attempt_spans, end_span, start_span
from .streamed import follow

__all__ = ["CHUNK_BUCKETS", "DURATION_BUCKETS", "FIRST_CHUNK_BUCKETS", "TOKEN_BUCKETS", "Metrics"]

#: Latencies of answered calls counted in one batch (:meth:`.histogram.LatencyHistogram.fold`).
FOLD_LATENCY = 256

@public
class Metrics:
    """Record GenAI-convention metrics and llmguard resilience metrics; keep in-process stats.

    ``meter_provider`` defaults to the global one (a no-op until an SDK is configured, so the
    layer then costs about a microsecond); ``tracer_provider`` enables one span per call and one
    per attempt. ``model`` names the model when calls carry no ``model=`` keyword; ``provider``
    sets ``gen_ai.provider.name`` (the integrations set it per call; without either, a
    ``provider/model`` prefix tells it, else it is ``"unknown"``: the attribute is required).
    Any number of Metrics layers may share a provider: each exports its own series,
    ``llmguard.pipeline`` tells them apart. Put it outermost so it sees the whole call (cache, retries).
    """

    __slots__ = ("name", "operation", "provider", "model", "_series", "_latency", "_in_flight",
                 "_input", "_output", "_counts", "_errors", "_neighbours", "_instruments",
                 "_tracer", "__weakref__")

    def __init__(self, *, name: str | None = None, meter_provider: Any = None,
                 tracer_provider: Any = None, provider: str | None = None,
                 model: str | None = None, operation: str = "chat") -> None:
        for arg, value in (("name", name), ("provider", provider), ("model", model)):
            if value is not None:
                text(arg, value, hint="; or None")
        text("operation", operation, hint="; e.g. 'chat'")
        for arg, value, method in (("meter_provider", meter_provider, "get_meter"),
                                   ("tracer_provider", tracer_provider, "get_tracer")):
            if value is not None and not callable(getattr(value, method, None)):
                raise TypeError(f"{arg} must be an OpenTelemetry provider (with .{method}()) "
                                f"or None for the global one, got {value!r}")
        #: Pipeline name, exported as ``llmguard.pipeline``.
        self.name = name
        #: ``gen_ai.operation.name`` unless the call says otherwise.
        self.operation = operation
        #: ``gen_ai.provider.name`` unless the call says otherwise, or None (then inferred
        #: from a ``provider/model`` name, else ``"unknown"``).
        self.provider = provider
        #: Model used when a call has no ``model=`` keyword.
        self.model = model
        self._series: dict[tuple[Any, ...], Series] = {}
        self._latency = LatencyHistogram()
        self._in_flight = self._input = self._output = 0
        #: Cache outcomes (hit, miss, coalesced), retries and fallbacks the calls reported.
        self._counts = dict.fromkeys(COUNTS, 0)
        self._errors: dict[str, int] = {}
        #: The other layers of every pipeline this layer was bound into, by id.
        self._neighbours: dict[int, Any] = {}
        self._instruments = instruments_for(meter_provider)  # ~30 ms on first use: the API
        self._instruments.add(self, self._series.values(), self._counts)
        self._tracer = None
        if tracer_provider is not None:
            from opentelemetry import trace

            self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)

    @property
    def tracer(self) -> Any:
        """The OpenTelemetry tracer of this layer's spans, or None without a tracer provider."""
        return self._tracer

    def bind(self, pipeline: Any) -> None:
        """Called by ``Pipeline.build``: remember the pipeline's layers to observe their state."""
        for layer in pipeline.layers:
            if layer is not self:
                self._neighbours[id(layer)] = layer

    def around_terminal(self, handler: Handler) -> Handler:
        """Called by ``Pipeline.build``: with tracing, one CLIENT span per provider attempt."""
        return handler if self._tracer is None else attempt_spans(self, handler)

    @property
    def neighbours(self) -> Iterable[Any]:
        """The other layers of the pipelines this layer guards (read at collection time)."""
        return self._neighbours.values()

    @property
    def sees_answers_now(self) -> bool:
        """True without a tracer: a call a Cache below answers at once needs only counting
        (:meth:`answered_now`); with one, every call gets its span through ``__call__``."""
        return self._tracer is None

    def answered_now(self, kwargs: dict[str, Any], result: Any, seconds: float) -> None:
        """A call answered at once by a Cache below (a hit): what :meth:`_finish` records for
        one, without a Call (its record would say only ``cache="hit"``)."""
        model = kwargs.get("model")
        if not isinstance(model, str):
            model = self.model
        response = result.get("model") if type(result) is dict else field(result, "model")
        if response is not None and not isinstance(response, str):
            response = None
        series = self._series.get((model, response, None, None, None, None, None))
        if series is None:
            known = CallRecord()
            known.cache = "hit"
            series = self._series_for(kwargs, known, response, None, "success")
        series.calls += 1
        self._latency.add(seconds)
        self._counts["hit"] += 1

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        span = None if self._tracer is None else start_span(self, call)
        loop = call.loop or loop_of(call)
        self._in_flight += 1
        start = call.started  # the guarded function's reading, in this same step (Call.started)
        if start is None:
            start = loop.time()
        else:
            call.started = None
        try:
            result = await call_next(call)
        except Exception as exc:
            self._in_flight -= 1
            self._finish(call, loop.time() - start, None, exc)
            if span is not None:
                end_span(span, call, exc)
            raise
        except BaseException as exc:  # cancelled: an outcome of its own, not a provider error
            self._in_flight -= 1
            self._cancelled(call)
            if span is not None:
                end_span(span, call, exc)
            raise
        if isinstance(result, Stream):
            follow(self, call, result, start, span)
            return result
        self._in_flight -= 1
        self._finish(call, loop.time() - start, result, None)
        if span is not None:
            end_span(span, call, None)
        return result

    def _series_for(self, kwargs: dict[str, Any], known: CallRecord, response: Any,
                    error: str | None, outcome: str) -> Series:
        """The series of a call with these arguments and this record (made on first use)."""
        model = kwargs.get("model")  # ``call.model``, without the property (every call)
        if not isinstance(model, str):
            model = self.model
        key = (model, response, error, known.provider, known.operation, known.server,
               known.deployment)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(
                attributes(self, known, model, response, error), model, outcome)
        return series

    def _cancelled(self, call: Call) -> None:
        self._series_for(call.kwargs, call.record, None, "cancelled", "cancelled").calls += 1

    def _finish(self, call: Call, seconds: float, result: Any, exc: Exception | None) -> None:
        known = record_of(call)
        if exc is None:  # ``_series_for``, its lookup written out (every answered call)
            response = result.get("model") if type(result) is dict else field(result, "model")
            if not isinstance(response, str):
                response = None
            model = call.kwargs.get("model")
            if not isinstance(model, str):
                model = self.model
            series = self._series.get((model, response, None, known.provider, known.operation,
                                       known.server, known.deployment))
            if series is None:
                series = self._series_for(call.kwargs, known, response, None, "success")
        else:
            leaf = error_leaf(exc)  # under a Fallback: the error that ended the call
            error = error_type(leaf)
            self._errors[error] = self._errors.get(error, 0) + 1
            outcome = "rejected" if isinstance(leaf, AdmissionError) else "error"
            series = self._series_for(call.kwargs, known, None, error, outcome)
        series.calls += 1
        pending = self._latency.pending  # ``self._latency.add(seconds)``, in batches
        pending.append(seconds)
        if len(pending) >= FOLD_LATENCY:
            self._latency.fold()
        counts = self._counts  # what the record counts (written out: every call runs it)
        if known.retries:
            counts["retries"] += known.retries
        if known.fallback is not None:
            counts["fallbacks"] += 1
        cache = known.cache
        if cache is not None and cache in counts:
            counts[cache] += 1
        if known.cost is not None:
            series.cost += known.cost
        instruments = self._instruments
        if known.wait and instruments.recording:
            instruments.wait.record(known.wait, series.attrs)
        if (cache == "hit" or cache == "coalesced") and not known.inherited:  # not billable
            return  # (``known.billable``, written out): answered by the cache, no provider
            # operation or tokens; a hit's whole record is its series, latency and count above
        recording = instruments.recording
        if recording:
            instruments.duration.record(seconds, series.attrs)
        usage = known.usage
        if usage is None and exc is None:
            usage = known.usage = extract_usage(result)
        if usage is not None:
            if type(usage) is Usage:  # a tuple: its counts read without the properties
                inputs, outputs = usage[0], usage[1]
            else:
                inputs, outputs = usage.input_tokens, usage.output_tokens
            self._input += inputs
            self._output += outputs
            if recording:
                instruments.tokens.record(inputs, series.input_attrs)
                if series.output_attrs is not None:
                    instruments.tokens.record(outputs, series.output_attrs)

    def snapshot(self) -> MetricsSnapshot:
        """The counts the observable instruments export (calls, in-flight, retries, cost)."""
        return snapshot_of(self.name, self._series.values(), self._counts, self._in_flight)

    def statistics(self) -> MetricsStats:
        """Counts, latency percentiles, tokens and cache hit ratio since construction."""
        return stats_of(self._series.values(), self._latency, self._counts, self._in_flight,
                        self._input, self._output, self._errors)

    def __repr__(self) -> str:
        done = sum(series.calls for series in self._series.values())
        return (f"<Metrics name={self.name!r} operation={self.operation!r} calls={done} "
                f"in_flight={self._in_flight} p50={self._latency.folded().quantile(0.5)}>")
