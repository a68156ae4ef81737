"""Metrics layer: OpenTelemetry GenAI metrics, llmguard resilience metrics, in-process stats.

Per call it does only what histograms need: up to three SDK records (duration, input and output
tokens) with attribute dicts built once per (model, error type) and reused. Everything countable
(calls by outcome, in-flight, retries, cache lookups, limits, headroom, circuit state) is an
observable instrument read at collection time from this layer's counters and from the
``statistics()`` of the other layers of its pipeline (found through ``bind``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .._core.check import text
from .._core.call import Call, Handler
from .._core.errors import AdmissionError
from .histogram import LatencyHistogram, MetricsStats
from .instruments import callbacks, detach_span, end_span, error_type, start_span
from .._core.stream import Stream
from .._core.tokens import extract_usage
from .._core.public import public

__all__ = ["CHUNK_BUCKETS", "DURATION_BUCKETS", "FIRST_CHUNK_BUCKETS", "TOKEN_BUCKETS", "Metrics"]

#: GenAI semantic conventions' advisory boundaries for ``gen_ai.client.operation.duration`` (s).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
#: GenAI semantic conventions' advisory boundaries for ``gen_ai.client.token.usage``.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)

#: Boundaries for stream timings: those the conventions advise for the server-side
#: time_to_first_token and time_per_output_token, which measure the same intervals.
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                       2.5, 5.0, 7.5, 10.0)
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

_SCOPE = "llmguard"


class _Series:
    """Counters and pre-built attribute dicts for one (model, error type) pair."""

    __slots__ = ("model", "error", "outcome", "calls", "duration_attrs", "input_attrs",
                 "output_attrs")

    def __init__(self, base: dict[str, str], model: str | None, error: str | None,
                 outcome: str) -> None:
        self.model, self.error, self.outcome, self.calls = model, error, outcome, 0
        attrs = dict(base)
        if model is not None:
            attrs["gen_ai.request.model"] = model
        if error is not None:
            attrs["error.type"] = error
        self.duration_attrs = attrs
        self.input_attrs = {**attrs, "gen_ai.token.type": "input"}
        self.output_attrs = {**attrs, "gen_ai.token.type": "output"}


@public
class Metrics:
    """Record GenAI-convention metrics and llmguard resilience metrics; keep in-process stats.

    ``meter_provider`` defaults to the global one (a no-op until an SDK is configured, so the
    layer then costs about a microsecond); ``tracer_provider`` enables one span per call.
    ``model`` names the model when calls carry no ``model=`` keyword; ``provider`` sets
    ``gen_ai.provider.name``. Put it outermost so it sees the whole call (cache, retries).
    """

    __slots__ = ("name", "operation", "provider", "model", "_base", "_series", "_latency",
                 "_in_flight", "_input", "_output", "_retries", "_fallbacks", "_cache",
                 "_errors", "_neighbours", "_duration", "_tokens", "_first_chunk", "_per_chunk",
                 "_wait", "_tracer",
                 "_callbacks", "_recording")

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
        #: ``gen_ai.operation.name``.
        self.operation = operation
        #: ``gen_ai.provider.name``, or None.
        self.provider = provider
        #: Model used when a call has no ``model=`` keyword.
        self.model = model
        base = {"gen_ai.operation.name": operation}
        if provider is not None:
            base["gen_ai.provider.name"] = provider
        if name is not None:
            base["llmguard.pipeline"] = name
        self._base = base
        self._series: dict[tuple[str | None, str | None], _Series] = {}
        self._latency = LatencyHistogram()
        self._in_flight = 0
        self._input = self._output = self._retries = self._fallbacks = 0
        self._cache = {"hit": 0, "miss": 0, "coalesced": 0}
        self._errors: dict[str, int] = {}
        #: The other layers of every pipeline this layer was bound into, by id.
        self._neighbours: dict[int, Any] = {}
        self._instruments(meter_provider)
        self._tracer = None
        if tracer_provider is not None:
            from opentelemetry import trace

            self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)

    def _instruments(self, meter_provider: Any) -> None:
        from opentelemetry import metrics  # ~30 ms: deferred so `import llmguard` stays fast

        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        # An explicit no-op provider records nothing, so skip the calls. (The global proxy must
        # still be called: an SDK installed later turns its instruments real.)
        self._recording = not isinstance(meter, metrics.NoOpMeter)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self._first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to receive the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=FIRST_CHUNK_BUCKETS)
        self._per_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk", unit="s",
            description="Time between consecutive chunks of a streamed answer",
            explicit_bucket_boundaries_advisory=CHUNK_BUCKETS)
        self._wait = meter.create_histogram(
            "llmguard.admission.wait", unit="s",
            description="Time a call waited for admission (rate limit, concurrency slot)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._callbacks = callbacks(self, meter)

    def bind(self, pipeline: Any) -> None:
        """Called by ``Pipeline.wrap``: remember the pipeline's layers to observe their state."""
        for layer in pipeline.layers:
            if layer is not self:
                self._neighbours[id(layer)] = layer

    @property
    def neighbours(self) -> Iterable[Any]:
        """The other layers of the pipelines this layer guards (read at collection time)."""
        return self._neighbours.values()

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        span = None if self._tracer is None else start_span(self, call)
        loop_time = asyncio.get_running_loop().time
        self._in_flight += 1
        start = loop_time()
        try:
            result = await call_next(call)
        except Exception as exc:
            self._in_flight -= 1
            self._finish(call, loop_time() - start, None, exc)
            if span is not None:
                end_span(span, call, exc)
            raise
        except BaseException as exc:  # cancelled: an outcome of its own, not a provider error
            self._in_flight -= 1
            self._series_for(call.model or self.model, "cancelled", "cancelled").calls += 1
            if span is not None:
                end_span(span, call, exc)
            raise
        if isinstance(result, Stream):
            self._follow(call, result, start, span)
            return result
        self._in_flight -= 1
        self._finish(call, loop_time() - start, result, None)
        if span is not None:
            end_span(span, call, None)
        return result

    def _follow(self, call: Call, stream: Stream, start: float, span: Any) -> None:
        """A streamed answer: time to first chunk now, time per chunk as they arrive, the call's
        duration, usage and outcome when the stream ends."""
        loop_time = asyncio.get_running_loop().time
        previous = loop_time()
        model = call.model or self.model
        attrs = self._series_for(model, None, "success").duration_attrs
        if self._recording:
            self._first_chunk.record(previous - start, attrs)

            def chunk(_chunk: Any) -> None:
                nonlocal previous
                if stream.chunks > 1:  # the first chunk's time is time_to_first_chunk
                    now = loop_time()
                    self._per_chunk.record(now - previous, attrs)
                    previous = now

            stream.on_chunk(chunk)
        if span is not None:
            span = detach_span(span)  # the stream ends in the consumer's context, not this one

        def end(error: BaseException | None) -> None:
            self._in_flight -= 1
            if error is None:
                call.usage = stream.usage
                self._finish(call, loop_time() - start, None, None)
            elif isinstance(error, Exception):
                self._finish(call, loop_time() - start, None, error)
            else:  # the consumer closed, dropped or was cancelled: like a cancelled call
                self._series_for(model, "cancelled", "cancelled").calls += 1
            if span is not None:
                end_span(span, call, error)

        stream.defer(end)

    def _series_for(self, model: str | None, error: str | None, outcome: str) -> _Series:
        series = self._series.get((model, error))
        if series is None:
            series = self._series[(model, error)] = _Series(self._base, model, error, outcome)
        return series

    def _finish(self, call: Call, seconds: float, result: Any, exc: Exception | None) -> None:
        model = call.model or self.model
        if exc is None:
            series = self._series_for(model, None, "success")
        else:
            error = error_type(exc)
            self._errors[error] = self._errors.get(error, 0) + 1
            outcome = "rejected" if isinstance(exc, AdmissionError) else "error"
            series = self._series_for(model, error, outcome)
        series.calls += 1
        self._latency.add(seconds)
        recording = self._recording
        if recording:
            self._duration.record(seconds, series.duration_attrs)
        usage = call.usage
        if usage is None and exc is None:
            usage = call.usage = extract_usage(result)
        if usage is not None:
            self._input += usage.input_tokens
            self._output += usage.output_tokens
            if recording:
                self._tokens.record(usage.input_tokens, series.input_attrs)
                self._tokens.record(usage.output_tokens, series.output_attrs)
        notes = call.notes
        if notes is not None:
            self._read_notes(notes, series)

    def _read_notes(self, notes: dict[str, Any], series: _Series) -> None:
        retries = notes.get("retries")
        if retries:
            self._retries += retries
        if notes.get("fallback") is not None:
            self._fallbacks += 1
        cache = notes.get("cache")
        if cache in self._cache:
            self._cache[cache] += 1
        wait = notes.get("wait")
        if wait is not None and self._recording:
            self._wait.record(wait, series.duration_attrs)

    def statistics(self) -> MetricsStats:
        """Counts, latency percentiles, tokens and cache hit ratio since construction."""
        by_outcome = {"success": 0, "error": 0, "rejected": 0, "cancelled": 0}
        for series in self._series.values():
            by_outcome[series.outcome] += series.calls
        latency = self._latency
        hits = self._cache["hit"] + self._cache["coalesced"]
        lookups = hits + self._cache["miss"]
        return MetricsStats(
            calls=sum(by_outcome.values()),
            successes=by_outcome["success"],
            failures=by_outcome["error"] + by_outcome["rejected"],
            rejected=by_outcome["rejected"],
            cancelled=by_outcome["cancelled"],
            in_flight=self._in_flight,
            latency_mean=latency.total / latency.count if latency.count else None,
            latency_min=latency.min if latency.count else None,
            latency_max=latency.max if latency.count else None,
            latency_p50=latency.quantile(0.50),
            latency_p95=latency.quantile(0.95),
            latency_p99=latency.quantile(0.99),
            input_tokens=self._input,
            output_tokens=self._output,
            retries=self._retries,
            fallbacks=self._fallbacks,
            cache_hits=hits,
            cache_misses=self._cache["miss"],
            cache_hit_ratio=hits / lookups if lookups else None,
            errors=dict(self._errors),
        )

    def __repr__(self) -> str:
        done = sum(series.calls for series in self._series.values())
        return (f"<Metrics name={self.name!r} operation={self.operation!r} calls={done} "
                f"in_flight={self._in_flight} p50={self._latency.quantile(0.5)}>")
