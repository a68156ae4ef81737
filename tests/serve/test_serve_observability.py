"""The gateway's pipelines are built like every other (``Pipeline.build``): chat, streams and
embeddings all pass its Metrics layer and get attempt spans, and its rate limits learn the
upstream's quotas from the upstream's response headers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from serve_helpers import MESSAGES, served

import llmguard as lg
from llmguard._serve.config import SERVE_STACK, ModelConfig, ServeConfig
from llmguard._serve.gateway import Gateway
from llmguard.testing import FixedWindowServer, LoopbackServer


@pytest.mark.looptime(False)  # real sockets: real time
def test_chat_streams_and_embeddings_export_metrics_and_spans() -> None:
    """One chat, one stream and one embeddings request through the real SDK: /metrics has the
    GenAI duration series of both operations, and each request has its CLIENT attempt span
    (``chat fake`` twice, ``embeddings fake``) under the request's own span."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with served(tracer_provider=tracer_provider) as server:
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        sdk.chat.completions.create(model="fake", messages=MESSAGES)
        chunks = list(sdk.chat.completions.create(model="fake", messages=MESSAGES, stream=True))
        sdk.embeddings.create(model="fake", input=["a", "b"])
        text = httpx.get(server.url + "/metrics").text
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    durations = [line for line in text.splitlines()
                 if line.startswith("gen_ai_client_operation_duration_seconds_count")]
    assert any('gen_ai_operation_name="chat"' in line for line in durations), durations
    assert any('gen_ai_operation_name="embeddings"' in line for line in durations), durations
    spans = exporter.get_finished_spans()
    attempts = sorted(span.name for span in spans if span.kind is SpanKind.CLIENT)
    assert attempts == ["chat fake", "chat fake", "embeddings fake"]
    calls = {span.context.span_id for span in spans if span.kind is SpanKind.INTERNAL}
    assert all(span.parent.span_id in calls for span in spans if span.kind is SpanKind.CLIENT)


@pytest.mark.looptime(False)  # real sockets: real time
async def test_the_gateway_learns_quotas_from_its_upstreams_headers() -> None:
    """A model configured with rpm=1000 in front of an upstream that allows 10 per minute: after
    one answer carrying ``x-ratelimit-remaining-requests: 9``, the model's rate limit has at
    most 9 requests of headroom (it learned from the header), not 999. The upstream's window
    starts now: one whose boundary fell just after the answer (its windows on the loop's clock,
    whatever it read) reset the cap before it was read (999 in one run)."""
    upstream = FixedWindowServer(rpm=10, window=60.0, epoch=asyncio.get_running_loop().time())
    async with LoopbackServer(upstream) as http:
        stack = replace(SERVE_STACK, rpm=1000, retries=0)
        config = ServeConfig(models={"m": ModelConfig("m", provider="openai",
                                                      base_url=http.base_url, stack=stack)})
        gateway = Gateway(config)
        try:
            tenant = gateway.tenants.authenticate(None)
            model = gateway.model_for(tenant, "m")
            answer = await gateway.call(model, tenant, {"model": "m", "messages": MESSAGES,
                                                        "max_tokens": 8}, 0)
            assert answer["choices"][0]["message"]["content"]
            (limit,) = [layer for layer in model.guarded.pipeline.layers
                        if isinstance(layer, lg.RateLimit)]
            assert limit.statistics().requests_available <= 9
        finally:
            await gateway.aclose()
