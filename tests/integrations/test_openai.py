"""llmguard.integrations.openai driving the real openai SDK, answered by httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

import llmguard as lg
from llmguard import FailureKind, classify
from llmguard.integrations import openai as lg_openai

MESSAGES = [{"role": "user", "content": "Say hello."}]


def chat_body(content: str = "Hello!", model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        "system_fingerprint": "fp_1",
    }


def responses_body(text: str = "Hello!") -> dict[str, Any]:
    return {
        "id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "model": "gpt-4o-mini", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


def ratelimit_headers(requests: int, tokens: int, reset: str = "6m0s") -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-requests": str(requests), "x-ratelimit-remaining-tokens": str(tokens),
        "x-ratelimit-reset-requests": reset, "x-ratelimit-reset-tokens": reset,
    }


class Server:
    """A scripted OpenAI endpoint: each request gets the next response (the last one repeats)."""

    def __init__(self, *responses: Callable[[httpx.Request], httpx.Response] | httpx.Response):
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses[min(len(self.requests), len(self.responses)) - 1]
        return answer(request) if callable(answer) else answer

    def client(self, max_retries: int = 0) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="test", base_url="http://openai.test/v1", max_retries=max_retries,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self)),
        )


def ok(body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=chat_body() if body is None else body, headers=headers)


def error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "requests", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


async def test_wrap_guards_chat_and_responses_and_returns_parsed_objects() -> None:
    """wrap() guards chat.completions.create and responses.create; callers get the SDK's parsed
    objects, and every call passes through the pipeline."""
    seen: list[str] = []

    async def recorder(call: lg.Call, call_next: lg.Handler) -> Any:
        seen.append(call.kwargs["model"])
        return await call_next(call)

    server = Server(lambda r: ok(responses_body()) if r.url.path.endswith("/responses") else ok())
    client = lg_openai.wrap(server.client(), lg.Pipeline(recorder))
    chat = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert chat.choices[0].message.content == "Hello!"
    response = await client.responses.create(model="gpt-4o", input="Say hello.")
    assert response.output_text == "Hello!"
    assert seen == ["gpt-4o-mini", "gpt-4o"]
    assert client.chat.completions.create.__name__ == "create"


async def test_wrap_returns_a_copy_and_leaves_the_original_client_alone() -> None:
    """The user's client is not modified: the guarded copy shares its connection pool."""
    server = Server(ok())
    original = server.client()
    guarded = lg_openai.wrap(original, lg.Pipeline())
    assert guarded is not original
    assert "create" not in vars(original.chat.completions)
    assert guarded._client is original._client


async def test_rate_limit_headers_of_answers_tighten_the_rate_limit() -> None:
    """x-ratelimit-remaining-*/reset-* headers of a 200 are fed to RateLimit.observe_headers, so
    its headroom follows what the provider reports (the parsed result is still returned)."""
    server = Server(ok(**ratelimit_headers(requests=3, tokens=900)))
    limit = lg.RateLimit(rpm=500, tpm=200_000)
    client = lg_openai.wrap(server.client(), lg.Pipeline(limit))
    result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.usage.total_tokens == 15
    stats = limit.statistics()
    assert stats.requests_available <= 3
    assert stats.tokens_available <= 900


async def test_a_429_pauses_the_rate_limit_and_its_headers_are_read() -> None:
    """A 429 with retry-after and x-ratelimit-* headers reaches the caller as openai's
    RateLimitError (classified RATE_LIMITED with its Retry-After), pauses RateLimit, and its
    rate-limit headers are observed too."""
    headers = {"retry-after": "20", **ratelimit_headers(requests=0, tokens=0, reset="20s")}
    server = Server(error(429, "Rate limit reached for requests", "rate_limit_exceeded", **headers))
    limit = lg.RateLimit(rpm=500)
    client = lg_openai.wrap(server.client(), lg.Pipeline(limit))
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    failure = classify(info.value)
    assert (failure.kind, failure.retry_after, failure.status) == (FailureKind.RATE_LIMITED, 20.0, 429)
    stats = limit.statistics()
    assert stats.requests_available == 0
    assert stats.rate_limited == 1


@pytest.mark.parametrize(
    "response, exc_type, kind",
    [
        (error(500, "The server had an error"), openai.InternalServerError, FailureKind.SERVER_ERROR),
        (error(503, "The engine is currently overloaded"), openai.InternalServerError, FailureKind.OVERLOADED),
        (error(429, "You exceeded your current quota", "insufficient_quota"), openai.RateLimitError, FailureKind.QUOTA_EXHAUSTED),
        (error(400, "This model's maximum context length is 128000 tokens", "context_length_exceeded"), openai.BadRequestError, FailureKind.CONTEXT_WINDOW),
        (error(401, "Incorrect API key provided"), openai.AuthenticationError, FailureKind.AUTH),
    ],
    ids=["500", "503", "429-quota", "400-context", "401"],
)
async def test_sdk_errors_are_classified(response: httpx.Response, exc_type: type, kind: FailureKind) -> None:
    """Errors the SDK raises for real-shaped error bodies propagate unchanged and classify right."""
    client = lg_openai.wrap(Server(response).client(), lg.Pipeline(lg.RateLimit(rpm=500)))
    with pytest.raises(exc_type) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert classify(info.value).kind is kind


async def test_guard_one_method() -> None:
    """guard(client.responses.create, pipeline) guards that method alone."""
    limit = lg.RateLimit(rpm=500)
    server = Server(ok(responses_body("Hi there"), **ratelimit_headers(requests=7, tokens=5000)))
    create = lg_openai.guard(server.client().responses.create, lg.Pipeline(limit))
    response = await create(model="gpt-4o-mini", input="hi")
    assert response.output_text == "Hi there"
    assert limit.statistics().requests_available <= 7
    assert create.__name__ == "create"


async def test_streaming_through_raw_responses() -> None:
    """stream=True works through the raw-response path: chunks arrive in order and the headers of
    the streamed answer are observed."""
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("Hel", "lo")
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    server = Server(httpx.Response(200, content=body.encode(), headers={
        "content-type": "text/event-stream", **ratelimit_headers(requests=4, tokens=100)}))
    limit = lg.RateLimit(rpm=500)
    client = lg_openai.wrap(server.client(), lg.Pipeline(limit))
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text = "".join([chunk.choices[0].delta.content async for chunk in stream])
    assert text == "Hello"
    assert limit.statistics().requests_available <= 4
    assert limit.statistics().in_flight == 0


def test_wrap_rejects_what_is_not_an_openai_client() -> None:
    """wrap() and guard() name what they expect and what to use instead."""
    with pytest.raises(TypeError, match="wrap_client"):
        lg_openai.wrap(object(), lg.Pipeline())
    with pytest.raises(TypeError, match="pipeline.wrap"):
        lg_openai.guard(print, lg.Pipeline())


async def test_without_a_rate_limit_no_raw_response_is_requested() -> None:
    """With no layer that observes headers, the plain method is guarded (no raw-response cost)."""
    server = Server(ok())
    client = lg_openai.wrap(server.client(max_retries=2), lg.Pipeline())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Retry layer: the SDK's retries are left alone
        result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello!"
    assert client.max_retries == 2


async def test_cancelled_request_leaves_the_rate_limit_at_baseline() -> None:
    """Cancelling a call while the SDK awaits the provider releases everything: RateLimit has
    nothing in flight and the next call proceeds."""
    release = asyncio.Event()
    started = asyncio.Event()
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await release.wait()  # hangs until cancelled
        return ok(**ratelimit_headers(requests=9, tokens=9000))

    client = openai.AsyncOpenAI(
        api_key="test", base_url="http://openai.test/v1", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    limit = lg.RateLimit(rpm=500)
    client = lg_openai.wrap(client, lg.Pipeline(limit))
    task = asyncio.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limit.statistics().in_flight == 0
    result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello!"
    assert limit.statistics().in_flight == 0




# Full pipelines: Retry and Fallback around the real SDK.


async def test_no_double_retries_and_a_warning_when_the_client_retries() -> None:
    """A client with the SDK's default max_retries=2 under Retry(attempts=3): a warning says the
    SDK's retries are turned off, and an always-500 provider sees exactly 3 requests (not 9)."""
    server = Server(error(500, "The server had an error"))
    with pytest.warns(UserWarning, match=r"max_retries=2"):
        client = lg_openai.wrap(server.client(max_retries=2), lg.Pipeline().retry(attempts=3))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(server.requests) == 3
    assert client.max_retries == 0


async def test_guard_one_method_turns_sdk_retries_off_under_retry() -> None:
    """guard(method) under Retry rebinds the method to a retry-free copy of its client."""
    server = Server(error(503, "The engine is currently overloaded"))
    original = server.client(max_retries=2)
    with pytest.warns(UserWarning, match="max_retries=0"):
        create = lg_openai.guard(original.chat.completions.create, lg.Pipeline().retry(attempts=2))
    with pytest.raises(openai.InternalServerError):
        await create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(server.requests) == 2
    assert original.max_retries == 2


async def test_429_retry_after_is_honoured_then_succeeds() -> None:
    """A 429 with retry-after: 2 and x-ratelimit headers, then a 200: Retry waits the provider's
    2 s (virtual time), RateLimit saw both the pause and the headers, the caller gets the answer."""
    headers = {"retry-after": "2", **ratelimit_headers(requests=0, tokens=0, reset="2s")}
    server = Server(error(429, "Rate limit reached for requests", "rate_limit_exceeded", **headers),
                    ok(**ratelimit_headers(requests=99, tokens=9000)))
    limit = lg.RateLimit(rpm=500)
    client = lg_openai.wrap(server.client(), lg.Pipeline().retry(attempts=3).then(limit))
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello!"
    assert len(server.requests) == 2
    assert loop.time() - start >= 2.0
    assert limit.statistics().rate_limited == 1


async def test_fallback_by_model_on_the_openai_sdk() -> None:
    """Fallback({"model": "gpt-4o"}): while gpt-4o-mini is overloaded (503), the same request
    is sent with model gpt-4o."""

    def by_model(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == "gpt-4o-mini":
            return error(503, "The engine is currently overloaded")
        return ok(chat_body("from the fallback", model=model))

    server = Server(by_model)
    pipeline = lg.Pipeline().fallback({"model": "gpt-4o"}).retry(attempts=2)
    client = lg_openai.wrap(server.client(), pipeline)
    result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert (result.model, result.choices[0].message.content) == ("gpt-4o", "from the fallback")
    assert [json.loads(r.content)["model"] for r in server.requests] == ["gpt-4o-mini"] * 2 + ["gpt-4o"]


async def test_wrap_client_accepts_the_sdks_decorated_create() -> None:
    """`wrap_client(AsyncOpenAI(), "chat.completions.create", ...)` works on the real SDK,
    whose `create` is a functools.wraps decorator around an async def."""
    client = openai.AsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1")
    lg.wrap_client(client, "chat.completions.create", lg.Pipeline(name="chat"))
    assert client.chat.completions.create.pipeline.name == "chat"


async def test_metrics_name_the_provider_server_and_operation() -> None:
    """Through wrap() and guard(), Metrics' GenAI attributes say who answered: provider openai
    (azure.ai.openai for an Azure client), the client's server, and the operation."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from tests.otel_helpers import collect

    reader = InMemoryMetricReader()
    pipeline = lg.Pipeline(name="sdk").metrics(meter_provider=MeterProvider(metric_readers=[reader]))
    server = Server(lambda r: ok(responses_body()) if r.url.path.endswith("/responses") else ok())
    client = lg_openai.wrap(server.client(), pipeline)
    with lg.recording() as calls:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await client.responses.create(model="gpt-4o", input="Say hello.")
    azure = openai.AsyncAzureOpenAI(
        api_key="test", azure_endpoint="https://example.openai.azure.com", api_version="2024-06-01",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(server)), max_retries=0)
    with lg.recording() as more:
        await lg_openai.guard(azure.chat.completions.create, pipeline)(
            model="gpt-4o-mini", messages=MESSAGES)
    assert [(r.provider, r.server, r.operation) for r in calls + more] == [
        ("openai", ("openai.test", 80), "chat"), ("openai", ("openai.test", 80), "chat"),
        ("azure.ai.openai", ("example.openai.azure.com", 443), "chat")]
    duration = collect(reader)["gen_ai.client.operation.duration"]
    seen = {(p.attributes["gen_ai.provider.name"], p.attributes["server.address"])
            for p in duration.data.data_points}
    assert seen == {("openai", "openai.test"), ("azure.ai.openai", "example.openai.azure.com")}


def embeddings_body() -> dict[str, Any]:
    return {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}


async def test_wrap_guards_embeddings_and_legacy_completions() -> None:
    """#35 item 8: ``embeddings.create`` (and ``completions.create``) go through the pipeline
    too: a RateLimit(rpm=1) admits one of three embeddings calls (before: all three were sent,
    unguarded)."""
    server = Server(lambda r: ok(embeddings_body()) if r.url.path.endswith("/embeddings")
                    else ok())
    client = lg_openai.wrap(server.client(), lg.Pipeline(name="emb").rate_limit(rpm=1, max_wait=1))
    with lg.recording() as calls:
        first = await client.embeddings.create(model="text-embedding-3-small", input="hi")
        for _ in range(2):
            with pytest.raises(lg.AdmissionTimeout):
                await client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert first.data[0].embedding == [0.1, 0.2]
    assert len(server.requests) == 1 and calls[0].operation == "embeddings"
    assert set(lg_openai.METHODS) >= {"embeddings.create", "completions.create"}
