"""Metrics layer: GenAI-convention instruments, llmguard.* observables, in-process stats, spans."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from otel_helpers import collect
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmguard as lg
from llmguard import ConcurrencyLimit, Metrics, QueueFull
from llmguard._observability.metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from llmguard.testing import FakeLLM


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


def points(metric: Any) -> dict[frozenset, Any]:
    return {frozenset(p.attributes.items()): p for p in metric.data.data_points}


async def test_duration_and_tokens_follow_genai_conventions(reader, provider) -> None:
    """A successful call records duration (s) and input/output tokens ({token}) with the GenAI
    attributes and the conventions' bucket boundaries; the duration is the virtual elapsed time."""
    fake = FakeLLM(latency=0.5)
    guarded = lg.Pipeline(Metrics(meter_provider=provider, provider="openai"), name="chat").wrap(
        fake.acompletion)
    await guarded(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    metrics = collect(reader)

    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert dict(point.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o"}
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert point.count == 1 and point.sum == pytest.approx(0.5)

    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert set(by_type) == {"input", "output"}
    assert tuple(by_type["input"].explicit_bounds) == TOKEN_BUCKETS
    assert by_type["input"].sum > 0 and by_type["output"].sum > 0


async def test_errors_carry_error_type_and_outcomes_are_counted(reader, provider) -> None:
    """A failing call records its duration with ``error.type`` (the exception class) and the
    observable ``llmguard.calls`` counts calls by outcome, including local rejections."""
    fake = FakeLLM([ConnectionError("down"), "ok", QueueFull("full")])
    guarded = lg.Pipeline(Metrics(meter_provider=provider, model="m")).wrap(fake.send_message)
    for _ in range(3):
        try:
            await guarded("hi")
        except Exception:
            pass
    metrics = collect(reader)
    errors = {p.attributes.get("error.type") for p in
              metrics["gen_ai.client.operation.duration"].data.data_points}
    assert errors == {None, "ConnectionError", "llmguard.QueueFull"}
    calls = {p.attributes["llmguard.outcome"]: p.value
             for p in metrics["llmguard.calls"].data.data_points}
    assert calls == {"success": 1, "error": 1, "rejected": 1}


async def test_cancelled_call_is_an_outcome_and_in_flight_returns_to_zero(reader, provider) -> None:
    """A call cancelled by its caller counts as ``cancelled`` (no duration, no error.type) and
    in-flight is back at zero; the next call proceeds and is recorded."""
    layer = Metrics(meter_provider=provider)
    guarded = lg.Pipeline(layer).wrap(FakeLLM(latency=10).send_message)
    task = asyncio.create_task(guarded("hi"))
    await asyncio.sleep(1)
    assert layer.statistics().in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = layer.statistics()
    assert (stats.cancelled, stats.in_flight, stats.failures, stats.errors) == (1, 0, 0, {})
    await guarded("again")
    assert layer.statistics().successes == 1
    metrics = collect(reader)
    (point,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert point.count == 1 and "error.type" not in point.attributes
    in_flight = {p.attributes["llmguard.layer"]: p.value
                 for p in metrics["llmguard.in_flight"].data.data_points}
    assert in_flight["metrics"] == 0


async def test_in_process_stats_percentiles_tokens_and_cache_ratio() -> None:
    """``stats()`` on the guarded function reports counts, min/max and p50/p95/p99 within the
    4 % bucket width, billable tokens (cache hits cost none), and cache hit ratio from the
    layers' notes, with no SDK at all."""

    async def cached(call: lg.Call, call_next: Any) -> Any:
        call.record.cache = "hit" if call.args[0] % 4 == 0 else "miss"
        call.record.retries = 1
        await asyncio.sleep(call.args[0] / 100)
        return await call_next(call)

    async def answer(i: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 10, "completion_tokens": 2}}

    guarded = lg.Pipeline(Metrics(), cached, name="p").wrap(answer)
    for i in range(1, 101):
        await guarded(i)
    stats = guarded.stats()["metrics"]
    assert (stats.calls, stats.successes, stats.failures) == (100, 100, 0)
    assert stats.latency_min == pytest.approx(0.01) and stats.latency_max == pytest.approx(1.0)
    assert stats.latency_p50 == pytest.approx(0.50, rel=0.05)
    assert stats.latency_p95 == pytest.approx(0.95, rel=0.05)
    assert stats.latency_p99 == pytest.approx(0.99, rel=0.05)
    assert (stats.input_tokens, stats.output_tokens, stats.retries) == (750, 150, 100)
    assert stats.cache_hit_ratio == pytest.approx(0.25)


async def test_neighbour_state_is_observed_at_collection_time(reader, provider) -> None:
    """Bound through the pipeline, Metrics reports the concurrency limit, the limiter's in-flight
    and its rejections from the limiter's own statistics() when the reader collects."""
    limit = ConcurrencyLimit(2)
    guarded = lg.Pipeline(Metrics(meter_provider=provider, name="p"), limit).wrap(
        FakeLLM(latency=5).send_message)
    tasks = [asyncio.create_task(guarded("x")) for _ in range(3)]
    await asyncio.sleep(1)
    metrics = collect(reader)
    (limit_point,) = metrics["llmguard.concurrency.limit"].data.data_points
    assert limit_point.value == 2
    assert limit_point.attributes["llmguard.layer"] == "concurrency_limit"
    in_flight = {p.attributes["llmguard.layer"]: p.value
                 for p in metrics["llmguard.in_flight"].data.data_points}
    assert in_flight == {"metrics": 3, "concurrency_limit": 2}
    (waiting,) = metrics["llmguard.queue.waiting"].data.data_points
    assert waiting.value == 1
    await asyncio.gather(*tasks)


async def test_duck_typed_headroom_and_circuit_state(reader, provider) -> None:
    """Any layer whose statistics() has headroom or a circuit ``state`` field shows up in the
    rate-limit headroom and circuit state gauges (0 closed, 1 half-open, 2 open)."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Snapshot:
        state: str
        requests_available: int
        tokens_available: int
        retries: int

    class Custom:
        async def __call__(self, call: lg.Call, call_next: Any) -> Any:
            return await call_next(call)

        def statistics(self) -> Snapshot:
            return Snapshot("half_open", 7, 900, 3)

    guarded = lg.Pipeline(Metrics(meter_provider=provider), Custom()).wrap(FakeLLM().send_message)
    metrics = collect(reader)
    requests = metrics["llmguard.rate_limit.requests_headroom"]
    tokens = metrics["llmguard.rate_limit.tokens_headroom"]
    assert (requests.unit, tokens.unit) == ("{request}", "{token}")  # one unit per metric
    assert [p.value for p in requests.data.data_points] == [7]
    assert [p.value for p in tokens.data.data_points] == [900]
    assert [p.value for p in metrics["llmguard.circuit.state"].data.data_points] == [1]
    assert [p.value for p in metrics["llmguard.retries"].data.data_points] == [3]
    del guarded


async def test_spans_follow_genai_names_and_carry_retries() -> None:
    """With a tracer provider each call gets an INTERNAL span ``llmguard {pipeline}`` with the
    retry count and, for local refusals, the layer that rejected it; each attempt at the provider
    gets a CLIENT child span ``chat {model}`` (the conventions' name) carrying its attempt number."""
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def retrying(call: lg.Call, call_next: Any) -> Any:
        call.record.retries = 2
        return await call_next(call)

    fake = FakeLLM(["ok", QueueFull("full")])
    guarded = lg.Pipeline(Metrics(tracer_provider=tracer_provider, model="m1", name="p"),
                          retrying).wrap(fake.send_message)
    await guarded("hi")
    with pytest.raises(QueueFull):
        await guarded("hi")
    spans = exporter.get_finished_spans()
    attempts = [span for span in spans if span.kind is SpanKind.CLIENT]
    ok, rejected = [span for span in spans if span.kind is SpanKind.INTERNAL]
    assert [a.parent.span_id for a in attempts] == [ok.context.span_id, rejected.context.span_id]
    assert {a.name for a in attempts} == {"chat m1"} and ok.name == "llmguard p"
    assert [a.attributes["llmguard.attempt"] for a in attempts] == [1, 1]
    assert ok.attributes["gen_ai.request.model"] == "m1"
    assert ok.attributes["llmguard.retries"] == 2
    assert rejected.attributes["llmguard.rejected_by"] == "QueueFull"
    assert rejected.attributes["error.type"] == "llmguard.QueueFull"


async def test_spans_carry_anthropic_usage_with_its_prompt_cache_parts() -> None:
    """An Anthropic answer's usage on the call span: input tokens with the cache reads and
    writes counted in (the conventions' total), and each apart as
    gen_ai.usage.cache_read.input_tokens / gen_ai.usage.cache_creation.input_tokens."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def claude(**kwargs: Any) -> dict[str, Any]:
        return {"type": "message", "usage": {
            "input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 30}}

    await lg.Pipeline(Metrics(tracer_provider=tracer_provider, name="claude")).wrap(claude)(
        model="claude")
    [span] = [s for s in exporter.get_finished_spans() if s.name == "llmguard claude"]
    assert span.attributes["gen_ai.usage.input_tokens"] == 1050
    assert span.attributes["gen_ai.usage.output_tokens"] == 7
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 30


def test_bad_arguments_are_refused_early() -> None:
    """Empty (ValueError) or non-string (TypeError) names are refused at construction, naming
    the argument."""
    with pytest.raises(ValueError, match="operation"):
        Metrics(operation="")
    with pytest.raises(TypeError, match="model"):
        Metrics(model=3)  # type: ignore[arg-type]


def test_import_llmguard_does_not_load_the_sdk() -> None:
    """``import llmguard`` loads neither the OpenTelemetry SDK nor the exporters nor the API."""
    import subprocess
    import sys

    code = ("import sys, llmguard; "
            "print([m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_cache_lookups_come_from_the_cache_layer(reader, provider) -> None:
    """With a real Cache layer in the pipeline, ``llmguard.cache.lookups`` reads the cache's own
    hit/miss counters and ``stats()`` reports the hit ratio from the calls' notes."""
    from llmguard import Cache

    guarded = lg.Pipeline(Metrics(meter_provider=provider), Cache(ttl=60)).wrap(
        FakeLLM().send_message)
    for prompt in ("a", "a", "a", "b"):
        await guarded(prompt)
    lookups = {(p.attributes["llmguard.layer"], p.attributes["llmguard.cache.result"]): p.value
               for p in collect(reader)["llmguard.cache.lookups"].data.data_points}
    assert lookups[("cache", "hit")] == 2 and lookups[("cache", "miss")] == 2
    assert guarded.stats()["metrics"].cache_hit_ratio == pytest.approx(0.5)


@given(st.lists(st.floats(min_value=1e-4, max_value=1e3), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.95, 0.99]))
def test_latency_quantiles_are_within_one_bucket(samples: list[float], q: float) -> None:
    """The bounded histogram's quantile is never below the exact one and at most one 4 % bucket
    above it (clamped to the observed max), whatever the samples; memory is a fixed list."""
    from llmguard._observability.histogram import LatencyHistogram

    histogram = LatencyHistogram()
    size = len(histogram.counts)
    for sample in samples:
        histogram.add(sample)
    exact = sorted(samples)[max(1, math.ceil(q * len(samples))) - 1]
    estimate = histogram.quantile(q)
    assert estimate is not None and exact * (1 - 1e-9) <= estimate <= exact * 1.04 + 1e-12
    assert len(histogram.counts) == size


@given(st.lists(st.floats(min_value=0, max_value=1e-3), min_size=1, max_size=50),
       st.sampled_from([None, [], [0.0, 1.0], [1e-6, 1e-5]]))
def test_a_value_in_the_first_bucket_lands_where_bisect_puts_it(samples, edges) -> None:
    """``add`` skips the bisect for a value at most the first edge (a cache hit's
    microseconds): every value still lands in the bucket ``bisect_left`` names."""
    from bisect import bisect_left

    from llmguard._observability.histogram import LatencyHistogram

    histogram = LatencyHistogram() if edges is None else LatencyHistogram(edges)
    expected = [0] * len(histogram.counts)
    for sample in [*samples, histogram.edges[0] if histogram.edges else 0.0]:
        histogram.add(sample)
        expected[bisect_left(histogram.edges, sample)] += 1
    assert histogram.counts == expected


@given(st.lists(st.floats(min_value=0, max_value=1e3), min_size=0, max_size=700))
def test_latencies_added_in_batches_read_as_added_one_by_one(samples: list[float]) -> None:
    """Metrics appends each answered call's latency to ``pending`` and folds it every
    ``FOLD_LATENCY`` calls: what a reader sees (``folded``, as ``statistics()`` reads it) is
    what ``add`` one by one would have counted, and reading never changes what the writer
    holds (a reader in another thread folds a copy)."""
    from llmguard._observability.histogram import LatencyHistogram
    from llmguard._observability.metrics import FOLD_LATENCY

    one_by_one, batched = LatencyHistogram(), LatencyHistogram()
    for sample in samples:
        one_by_one.add(sample)
        batched.pending.append(sample)  # as ``Metrics._finish`` does
        if len(batched.pending) >= FOLD_LATENCY:
            batched.fold()
    held = (list(batched.counts), batched.count, list(batched.pending))
    seen = batched.folded()
    assert (list(batched.counts), batched.count, list(batched.pending)) == held
    assert seen.counts == one_by_one.counts and seen.count == one_by_one.count == len(samples)
    assert (seen.min, seen.max) == (one_by_one.min, one_by_one.max)
    assert seen.total == pytest.approx(one_by_one.total)
    for q in (0.5, 0.95, 0.99):
        assert seen.quantile(q) == one_by_one.quantile(q)


async def test_statistics_count_latencies_not_folded_yet() -> None:
    """Fewer answered calls than a batch: ``statistics()`` still counts every latency."""
    async def send_message(prompt: str) -> str:
        await asyncio.sleep(0.25)
        return prompt

    guarded = lg.guard(Metrics(name="batched"))(send_message)
    for i in range(3):
        await guarded(f"q{i}")
    stats = guarded.stats()["metrics"]
    assert stats.successes == 3
    assert stats.latency_min == pytest.approx(0.25) and stats.latency_max == pytest.approx(0.25)
    assert stats.latency_mean == pytest.approx(0.25) and stats.latency_p50 is not None


async def test_a_dropped_pipeline_on_the_global_api_is_collected() -> None:
    """``Metrics()`` on the global OpenTelemetry API (no SDK: the API's proxy meter, whose
    callbacks live as long as the process) does not keep its pipeline alive: the instruments
    hold their layers weakly, so dropping the guarded function frees the layer, its neighbours
    and the function."""
    import gc
    import weakref

    async def send_message(prompt: str) -> str:
        await asyncio.sleep(0)
        return prompt

    metrics, breaker = Metrics(name="dropped"), lg.CircuitBreaker()
    guarded = lg.Pipeline(metrics, lg.Cache(ttl=60), breaker, ConcurrencyLimit(2)).wrap(
        send_message)
    assert await guarded("hi") == "hi" and metrics.statistics().calls == 1
    refs = [weakref.ref(metrics), weakref.ref(guarded), weakref.ref(send_message)]
    del metrics, breaker, guarded, send_message
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


async def test_budget_gauges_and_the_cost_counter(reader, provider) -> None:
    """A Budget beside Metrics exports llmguard.budget.{cap,spent,reserved,remaining} (USD)
    and the cost it priced on the record feeds llmguard.cost."""
    budget = lg.Budget(1.0, prices={"m": (1.0, 2.0)})
    guarded = lg.Pipeline(Metrics(meter_provider=provider), budget).wrap(FakeLLM().acompletion)
    await guarded(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    metrics = collect(reader)
    spent = budget.statistics().spent_usd
    values = {name: [p.value for p in metrics[f"llmguard.budget.{name}"].data.data_points]
              for name in ("cap", "spent", "reserved", "remaining")}
    assert values == {"cap": [1.0], "spent": [spent], "reserved": [0.0],
                      "remaining": [pytest.approx(1.0 - spent)]}
    assert metrics["llmguard.budget.spent"].unit == "USD"
    assert [p.value for p in metrics["llmguard.cost"].data.data_points] == [pytest.approx(spent)]
