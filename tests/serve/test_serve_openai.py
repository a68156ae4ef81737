"""The real openai SDK against the real gateway (uvicorn on a loopback port): chat, streaming
with the usage chunk, embeddings, models, and upstreams that are themselves OpenAI-compatible."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_helpers import MESSAGES, chat, served, write_config

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


def client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_default_gateway_serves_the_fake_model_to_the_sdk() -> None:
    """With no config, a chat completion from the offline fake comes back as the SDK expects."""
    with served() as server:
        answer = client(server).chat.completions.create(model="fake", messages=MESSAGES)
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streaming_through_the_sdk_with_usage_chunk() -> None:
    """stream=True arrives as OpenAI chunks; include_usage adds the final usage-only chunk."""
    with served() as server:
        chunks = list(client(server).chat.completions.create(
            model="fake", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"


def test_stream_without_include_usage_has_no_usage_chunk_but_is_accounted() -> None:
    """The gateway asks upstream for usage anyway (tenant accounting) but does not forward it."""
    with served() as server:
        chunks = list(client(server).chat.completions.create(
            model="fake", messages=MESSAGES, stream=True))
        usage = httpx.get(server.url + "/v1/usage").json()
    assert all(c.usage is None for c in chunks)
    assert usage["output_tokens"] > 0 and usage["requests"] == 1


def test_raw_sse_ends_with_done() -> None:
    """The raw body is `data: {...}` events and a final `data: [DONE]`."""
    with served() as server:
        r = httpx.post(server.url + "/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_embeddings_and_models() -> None:
    """Embeddings are deterministic vectors of the asked dimensions; /v1/models lists models."""
    with served() as server:
        sdk = client(server)
        one = sdk.embeddings.create(model="fake", input=["a", "b"], dimensions=16)
        two = sdk.embeddings.create(model="fake", input="a", dimensions=16)
        models = [m.id for m in sdk.models.list()]
        card = sdk.models.retrieve("fake")
    assert len(one.data) == 2 and len(one.data[0].embedding) == 16
    assert one.data[0].embedding == two.data[0].embedding
    assert one.data[0].embedding != one.data[1].embedding
    assert "fake" in models and card.id == "fake"


def test_health_readiness_and_metrics() -> None:
    """/healthz and /readyz answer 200; /metrics is Prometheus text with per-tenant counters
    that count every request and its tokens (totals kept per request, read at the scrape)."""
    with served() as server:
        answers = [client(server).chat.completions.create(model="fake", messages=MESSAGES)
                   for _ in range(3)]
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
        text = httpx.get(server.url + "/metrics").text
    assert "gen_ai_client_operation_duration_seconds" in text

    def value(name: str, *labels: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(name)
                 and all(label in line for label in labels)]
        assert len(lines) == 1, (name, labels, lines)
        return float(lines[0].rsplit(" ", 1)[1])

    tenant = 'llmguard_tenant="anonymous"'
    assert value("llmguard_gateway_requests_total", tenant, '="200"') == 3
    assert value("llmguard_gateway_tokens_total", tenant, 'gen_ai_token_type="input"') == sum(
        answer.usage.prompt_tokens for answer in answers)
    assert value("llmguard_gateway_tokens_total", tenant, 'gen_ai_token_type="output"') == sum(
        answer.usage.completion_tokens for answer in answers)


def test_openai_compatible_upstream_and_litellm_upstream(tmp_path) -> None:
    """A model routed to an OpenAI-compatible base URL (here: a second gateway) works for JSON
    and streams, through aiohttp (provider "openai") and through litellm."""
    with served() as upstream:
        config = write_config(tmp_path, f"""
[models.remote]
provider = "openai"
base_url = "{upstream.url}/v1"
api_key_env = "SERVE_TEST_UPSTREAM_KEY"
model = "fake"

[models.via-litellm]
provider = "litellm"
model = "openai/fake"
base_url = "{upstream.url}/v1"
api_key_env = "SERVE_TEST_UPSTREAM_KEY"
""")
        import os

        os.environ["SERVE_TEST_UPSTREAM_KEY"] = "sk-upstream-secret-123456"
        try:
            with served(config) as server:
                sdk = client(server)
                for model in ("remote", "via-litellm"):
                    answer = sdk.chat.completions.create(model=model, messages=MESSAGES)
                    assert answer.choices[0].message.content == "echo: hello there"
                    chunks = list(sdk.chat.completions.create(
                        model=model, messages=MESSAGES, stream=True,
                        stream_options={"include_usage": True}))
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    assert text == "echo: hello there"
                    assert any(c.usage is not None for c in chunks)
                emb = sdk.embeddings.create(model="remote", input="x")
                assert len(emb.data[0].embedding) == 8
        finally:
            del os.environ["SERVE_TEST_UPSTREAM_KEY"]


async def test_an_upstream_answer_is_passed_on_as_it_came_and_a_fallback_is_encoded(
        tmp_path) -> None:
    """A plain answer of an OpenAI-compatible upstream reaches the client byte for byte (the
    upstream's spacing and UTF-8, not a second encoding of ours) with the gateway's headers;
    an answer that did not come so (a fallback model's, once the upstream fails) is encoded."""
    import asyncio
    import json

    from llmguard._serve.config import load
    from llmguard._serve.server import make_app

    raw = ('{ "id": "chatcmpl-1", "object": "chat.completion", "model": "up",\n'
           '  "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": '
           '"assistant", "content": "héllo"}}],\n  "usage": {"prompt_tokens": 3, '
           '"completion_tokens": 1, "total_tokens": 4} }').encode()
    answers = iter([raw, None])  # None: a 500, so the second request falls back

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            body = next(answers)
            status = b"200 OK" if body is not None else b"500 Internal Server Error"
            body = body if body is not None else b'{"error": {"message": "down"}}'
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
        writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    config = write_config(tmp_path, f"""
[models.remote]
provider = "openai"
base_url = "http://127.0.0.1:{port}/v1"
retries = 0
fallbacks = ["local"]

[models.local]
provider = "fake"
""")
    app = make_app(load(str(config)))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    try:
        first = await client.post("/v1/chat/completions", json=chat("remote"))
        second = await client.post("/v1/chat/completions", json=chat("remote"))
    finally:
        await client.aclose()
        await app.state.gateway.aclose()
        upstream.close()
    assert first.status_code == 200 and first.content == raw
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-request-id"].startswith("req_")
    assert second.status_code == 200 and second.json()["choices"][0]["message"]["content"]
    assert second.content == json.dumps(second.json(), separators=(",", ":")).encode()
