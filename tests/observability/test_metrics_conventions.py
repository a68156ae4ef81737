"""Metrics against the OpenTelemetry GenAI conventions (issue #20) and the composition findings
of issue #18 that live in observability (3: tracing keeps the call's function; 6: every Metrics
layer of a MeterProvider exports its own llmguard.* series).

Every test reads what the SDK exports (InMemoryMetricReader, InMemorySpanExporter) and compares
with the semconv package's constants where they exist."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as GM
from opentelemetry.semconv.attributes import error_attributes as EA
from opentelemetry.trace import SpanKind, StatusCode

import llmguard as lg
from llmguard import Cache, Fallback, Metrics, RequestTooLarge, Timeout
from llmguard.testing import FakeLLM

#: The ExplicitBucketBoundaries the GenAI metrics page gives for every client histogram but
#: token usage (duration, time_to_first_chunk, time_per_output_chunk).
SPEC_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                40.96, 81.92)
SPEC_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
               16777216, 67108864)
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    return {metric.name: metric for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics for metric in scope.metrics}


async def test_tracing_keeps_each_functions_own_cache_entries(spans) -> None:
    """#18 finding 3: with tracing on, two different functions wrapped by one pipeline with
    Metrics + Cache get their own answers (the attempt spans hook the terminal handler; the
    call's function, which Cache keys on, is never replaced)."""
    tracer_provider, exporter = spans
    pipeline = lg.Pipeline(Metrics(tracer_provider=tracer_provider), Cache(ttl=60))

    @pipeline
    async def summarise(text: str) -> str:
        return f"summary of {text}"

    @pipeline
    async def translate(text: str) -> str:
        return f"translation of {text}"

    assert await translate("hello") == "translation of hello"
    assert await summarise("hello") == "summary of hello"
    assert await summarise("hello") == "summary of hello"  # a hit, of its own entry
    client = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(client) == 2  # one attempt per provider call; the hit made none


async def test_two_pipelines_on_one_provider_each_export_their_series(reader, provider) -> None:
    """#18 finding 6: a second Metrics on the same MeterProvider keeps its llmguard.* series;
    every observable instrument has one point per pipeline."""
    chat = lg.Pipeline(Metrics(meter_provider=provider, name="chat"), lg.ConcurrencyLimit(4))
    embed = lg.Pipeline(Metrics(meter_provider=provider, name="embed"), lg.ConcurrencyLimit(2))
    a = chat.wrap(FakeLLM().send_message)
    b = embed.wrap(FakeLLM().send_message)
    await a("x")
    await b("y")
    await b("z")
    metrics = collect(reader)
    calls = {p.attributes["llmguard.pipeline"]: p.value
             for p in metrics["llmguard.calls"].data.data_points}
    assert calls == {"chat": 1, "embed": 2}
    limits = {p.attributes["llmguard.pipeline"]: p.value
              for p in metrics["llmguard.concurrency.limit"].data.data_points}
    assert limits == {"chat": 4, "embed": 2}
    del a, b


async def test_error_type_under_a_fallback_is_the_error_that_ended_the_call(reader, provider
                                                                             ) -> None:
    """#20 item 2: under a Fallback, ``error.type`` names the alternate's error, not
    FallbackExhausted; a refusal (RequestTooLarge) counts as outcome ``rejected``."""
    backup = FakeLLM([RequestTooLarge("too large")])
    guarded = lg.Pipeline(Metrics(meter_provider=provider, model="m"),
                          Fallback(backup.send_message)).wrap(
        FakeLLM([ConnectionError("down")]).send_message)
    with pytest.raises(lg.FallbackExhausted):
        await guarded("hi")
    metrics = collect(reader)
    (point,) = metrics[GM.GEN_AI_CLIENT_OPERATION_DURATION].data.data_points
    assert point.attributes[EA.ERROR_TYPE] == "llmguard.RequestTooLarge"
    outcomes = {p.attributes["llmguard.outcome"] for p in metrics["llmguard.calls"].data.data_points}
    assert outcomes == {"rejected"}


async def test_cache_hits_record_no_tokens_and_no_operation_duration(reader, provider) -> None:
    """#20 item 3: one provider call answered four times from the cache gives one duration
    sample and one input and one output token sample: usage counts billable tokens only."""
    fake = FakeLLM()
    guarded = lg.Pipeline(Metrics(meter_provider=provider), Cache(ttl=60)).wrap(fake.acompletion)
    for _ in range(4):
        await guarded(model="m", messages=MESSAGES)
    assert fake.call_count == 1
    metrics = collect(reader)
    (duration,) = metrics[GM.GEN_AI_CLIENT_OPERATION_DURATION].data.data_points
    assert duration.count == 1
    tokens = metrics[GM.GEN_AI_CLIENT_TOKEN_USAGE].data.data_points
    assert sorted(p.attributes[GA.GEN_AI_TOKEN_TYPE] for p in tokens) == ["input", "output"]
    assert all(p.count == 1 for p in tokens)
    stats = guarded.stats()["metrics"]  # what a hit does record: its call, latency, cache count
    assert (stats.calls, stats.successes, stats.cache_hit_ratio) == (4, 4, 0.75)
    (billed,) = [p for p in tokens if p.attributes[GA.GEN_AI_TOKEN_TYPE] == "input"]
    assert stats.input_tokens == billed.sum  # the one provider call's, not four times it
    (layer,) = [layer for layer in guarded.pipeline.layers if isinstance(layer, Metrics)]
    assert dict(layer.snapshot().calls) == {("success", "m"): 4}


async def test_stream_timings_use_the_client_side_boundaries(reader, provider) -> None:
    """#20 item 4: time_to_first_chunk and time_per_output_chunk are exported in seconds with
    the boundaries the spec gives for the client metrics, and the provider name."""
    fake = FakeLLM(latency=0.3, seconds_per_token=0.05)
    guarded = lg.Pipeline(Metrics(meter_provider=provider, provider="openai")).wrap(
        fake.acompletion)
    stream = await guarded(model="m", messages=MESSAGES, stream=True,
                           stream_options={"include_usage": True})
    async for _ in stream:
        pass
    metrics = collect(reader)
    for name in (GM.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
                 GM.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK):
        metric = metrics[name]
        assert metric.unit == "s"
        for point in metric.data.data_points:
            assert tuple(point.explicit_bounds) == SPEC_SECONDS
            assert point.attributes[GA.GEN_AI_PROVIDER_NAME] == "openai"
    (first,) = metrics[GM.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK].data.data_points
    assert first.sum == pytest.approx(0.3)
    (tokens,) = [p for p in metrics[GM.GEN_AI_CLIENT_TOKEN_USAGE].data.data_points
                 if p.attributes[GA.GEN_AI_TOKEN_TYPE] == "input"]
    assert tuple(tokens.explicit_bounds) == SPEC_TOKENS


async def test_embeddings_record_their_operation_and_no_output_tokens(reader, provider) -> None:
    """#20 item 6: an embeddings call is recorded as ``gen_ai.operation.name = embeddings``
    with an input-token sample and no (zero) output-token sample."""
    async def embed(**kwargs: Any) -> dict[str, Any]:
        return {"model": "e-1", "data": [], "usage": {"prompt_tokens": 7, "total_tokens": 7}}

    guarded = lg.Pipeline(Metrics(meter_provider=provider, operation="embeddings")).wrap(embed)
    await guarded(model="e", input=["x"])
    tokens = collect(reader)[GM.GEN_AI_CLIENT_TOKEN_USAGE].data.data_points
    assert [(p.attributes[GA.GEN_AI_OPERATION_NAME], p.attributes[GA.GEN_AI_TOKEN_TYPE], p.sum)
            for p in tokens] == [(GA.GenAiOperationNameValues.EMBEDDINGS.value, "input", 7)]


async def test_response_model_is_recorded(reader, provider) -> None:
    """#20 item 7: the model that answered (``gen_ai.response.model``) is on the duration."""
    async def answer(**kwargs: Any) -> dict[str, Any]:
        return {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

    guarded = lg.Pipeline(Metrics(meter_provider=provider)).wrap(answer)
    await guarded(model="gpt-4o", messages=MESSAGES)
    (point,) = collect(reader)[GM.GEN_AI_CLIENT_OPERATION_DURATION].data.data_points
    assert point.attributes[GA.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert point.attributes[GA.GEN_AI_REQUEST_MODEL] == "gpt-4o"


async def test_attempt_spans_timeout_fallback_model_and_kinds(spans) -> None:
    """#20 item 8: a timed-out attempt's CLIENT span ends in ERROR with ``error.type``; the
    fallback attempt carries the alternate's ``gen_ai.request.model``; the call span is
    INTERNAL with its own name, so no two nested CLIENT spans share one."""
    tracer_provider, exporter = spans
    slow_first = [True]

    async def answer(**kwargs: Any) -> Any:
        if slow_first and slow_first.pop():
            await asyncio.sleep(10)
        return {"model": kwargs["model"], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    guarded = lg.Pipeline(Metrics(tracer_provider=tracer_provider, name="chat"),
                          Fallback({"model": "backup"}), Timeout(1)).wrap(answer)
    await guarded(model="primary", messages=MESSAGES)
    await asyncio.sleep(0)  # a cancelled attempt's span ends one loop turn later
    finished = exporter.get_finished_spans()
    call = [s for s in finished if s.kind is SpanKind.INTERNAL]
    attempts = sorted((s for s in finished if s.kind is SpanKind.CLIENT),
                      key=lambda s: s.start_time)
    assert [s.name for s in call] == ["llmguard chat"]
    assert [s.name for s in attempts] == ["chat primary", "chat backup"]
    timed_out, backup = attempts
    assert timed_out.status.status_code is StatusCode.ERROR
    assert timed_out.attributes[EA.ERROR_TYPE] == "TimeoutError"
    assert backup.attributes[GA.GEN_AI_REQUEST_MODEL] == "backup"
    assert backup.status.status_code is StatusCode.UNSET


async def test_cancelled_attempt_is_not_an_error(spans) -> None:
    """A caller's own cancellation ends the attempt span without error (outcome cancelled)."""
    tracer_provider, exporter = spans
    guarded = lg.Pipeline(Metrics(tracer_provider=tracer_provider)).wrap(
        FakeLLM(latency=10).send_message)
    task = asyncio.create_task(guarded("hi"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    (attempt,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert attempt.status.status_code is StatusCode.UNSET
    assert attempt.attributes["llmguard.outcome"] == "cancelled"


async def test_cost_counter_in_usd_by_model_and_pipeline(reader, provider) -> None:
    """Cost noted on the call (``call.record.cost``, as the litellm integration does) is
    exported as the ``llmguard.cost`` counter in USD with model and pipeline attributes."""
    async def priced(call: lg.Call, call_next: Any) -> Any:
        result = await call_next(call)
        call.record.cost = 0.25
        return result

    guarded = lg.Pipeline(Metrics(meter_provider=provider, name="chat"), priced).wrap(
        FakeLLM().acompletion)
    for _ in range(3):
        await guarded(model="gpt-4o", messages=MESSAGES)
    cost = collect(reader)["llmguard.cost"]
    assert cost.unit == "USD"
    (point,) = cost.data.data_points
    assert point.value == pytest.approx(0.75)
    assert dict(point.attributes) == {"llmguard.pipeline": "chat",
                                      GA.GEN_AI_REQUEST_MODEL: "gpt-4o"}


async def test_a_dropped_pipelines_counters_never_go_backwards(reader, provider) -> None:
    """Metrics layers are held weakly by their provider's instruments; when one is collected
    its cumulative counts stay exported (a counter never decreases), its gauges go."""
    import gc

    guarded = lg.Pipeline(Metrics(meter_provider=provider, name="tmp")).wrap(
        FakeLLM().send_message)
    await guarded("x")
    del guarded
    gc.collect()
    (point,) = collect(reader)["llmguard.calls"].data.data_points
    assert point.value == 1 and point.attributes["llmguard.pipeline"] == "tmp"


async def test_the_deployment_that_answered_is_an_attribute(reader, provider) -> None:
    """Under a Router, every call's duration carries ``llmguard.deployment``: the deployment
    that answered."""
    llm = FakeLLM()
    router = lg.Router(lg.Deployment({"model": "eu"}, name="eu", rpm=1),
                       lg.Deployment({"model": "us"}, name="us", rpm=1), strategy="ordered")
    chat = lg.Pipeline(Metrics(meter_provider=provider), router).wrap(llm.acompletion)
    await chat(model="m", messages=MESSAGES)
    await chat(model="m", messages=MESSAGES)
    points = collect(reader)[GM.GEN_AI_CLIENT_OPERATION_DURATION].data.data_points
    assert sorted(p.attributes["llmguard.deployment"] for p in points) == ["eu", "us"]
async def test_admission_rejections_by_reason_are_disjoint(reader, provider) -> None:
    """#35 item 8: ``llmguard.admission.rejected`` counts each refused call under one reason:
    a RateLimit's time-outs are ``timed_out`` only (before, ``rejected`` included them, so a
    sum() over reasons counted them twice)."""
    limit = lg.RateLimit(rpm=1, tpm=1000, max_wait=1)
    guarded = lg.Pipeline(name="adm").metrics(meter_provider=provider).then(limit).wrap(
        FakeLLM().acompletion)
    await guarded(model="m", messages=MESSAGES)
    for _ in range(2):  # no room for a minute: each waits max_wait and gives up
        with pytest.raises(lg.AdmissionTimeout):
            await guarded(model="m", messages=MESSAGES)
    with pytest.raises(RequestTooLarge):  # can never fit: refused at once
        await guarded(model="m", messages=MESSAGES, max_tokens=5000)
    points = {p.attributes["llmguard.reason"]: p.value
              for p in collect(reader)["llmguard.admission.rejected"].data.data_points}
    assert points == {"rejected": 1, "timed_out": 2}
    assert sum(points.values()) == 3 == limit.statistics().rejected + limit.statistics().timed_out


async def test_token_usage_always_names_a_provider(reader, provider) -> None:
    """#35 item 8: ``gen_ai.provider.name`` is required on every GenAI point: without
    ``provider=`` and an integration, a litellm-style ``provider/model`` name tells it, else it
    is ``unknown``; ``provider=`` wins over both."""
    fake = FakeLLM()
    bare = lg.Pipeline(name="bare").metrics(meter_provider=provider).wrap(fake.acompletion)
    named = lg.Pipeline(name="named").metrics(meter_provider=provider, provider="openai").wrap(
        fake.acompletion)
    await bare(model="gpt-4o-mini", messages=MESSAGES)
    await bare(model="anthropic/claude-3-5-haiku", messages=MESSAGES)
    await named(model="anthropic/claude-3-5-haiku", messages=MESSAGES)
    metrics = collect(reader)
    for name in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration"):
        seen = {(p.attributes["llmguard.pipeline"], p.attributes[GA.GEN_AI_REQUEST_MODEL],
                 p.attributes[GA.GEN_AI_PROVIDER_NAME]) for p in metrics[name].data.data_points}
        assert seen == {("bare", "gpt-4o-mini", "unknown"),
                        ("bare", "anthropic/claude-3-5-haiku", "anthropic"),
                        ("named", "anthropic/claude-3-5-haiku", "openai")}, name


async def test_error_type_names_no_private_module(reader, provider) -> None:
    """#35 item 8: ``error.type`` is the public name of the error's class: the provider error
    of ``llmguard.testing`` lives in a private module but is ``llmguard.testing.ProviderError``; a class no public module exposes keeps its bare name;
    builtins, llmguard's own and the SDKs' (which name themselves publicly) stay as they were."""
    import httpx
    import openai

    from llmguard._observability.conventions import error_type
    from llmguard.testing import make_error

    provider_error = make_error(lg.FailureKind.OVERLOADED)
    assert "._" in type(provider_error).__module__  # defined in a private module

    class LocalError(Exception):
        pass

    guarded = lg.Pipeline(name="err").metrics(meter_provider=provider).wrap(
        FakeLLM([provider_error]).acompletion)
    with pytest.raises(type(provider_error)):
        await guarded(model="m", messages=MESSAGES)
    points = collect(reader)["gen_ai.client.operation.duration"].data.data_points
    assert [p.attributes[EA.ERROR_TYPE] for p in points] == ["llmguard.testing.ProviderError"]
    response = httpx.Response(429, request=httpx.Request("POST", "http://x/v1/chat"))
    assert error_type(openai.RateLimitError("slow", response=response, body=None)) == \
        "openai.RateLimitError"
    assert error_type(httpx.ReadTimeout("t")) == "httpx.ReadTimeout"
    assert error_type(LocalError()) == "LocalError"
    assert error_type(TimeoutError()) == "TimeoutError"
    assert error_type(lg.QueueFull("full")) == "llmguard.QueueFull"
