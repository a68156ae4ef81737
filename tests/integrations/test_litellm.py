"""llmguard.integrations.litellm driving the real litellm with ``mock_response`` (no network)."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # never fetch the cost map from the network

import subprocess
import sys
from typing import Any

import httpx
import litellm
import litellm.main
import pytest

import llmguard as lg
from llmguard import FailureKind, classify
from llmguard.integrations import litellm as lg_litellm
from llmguard._core.tokens import DEFAULT_OUTPUT_RESERVE
from llmguard.integrations.litellm import count_tokens

MESSAGES = [{"role": "user", "content": "Say hello in one word."}]


@pytest.fixture(autouse=True)
def _quiet_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """No callbacks, no global retries left over from another test."""
    monkeypatch.setattr(litellm, "success_callback", [])
    monkeypatch.setattr(litellm, "failure_callback", [])
    monkeypatch.setattr(litellm, "callbacks", [])
    monkeypatch.setattr(litellm, "num_retries", None)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every request litellm really "sends" (its mock path), with the model and arguments."""
    log: list[dict[str, Any]] = []
    original = litellm.main.mock_completion

    def recording(model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        log.append({"model": model, **kwargs})
        return original(model, messages, *args, **kwargs)

    monkeypatch.setattr(litellm.main, "mock_completion", recording)
    return log


class Notes:
    """Outermost test layer: keeps each finished call so tests can read its annotations."""

    def __init__(self) -> None:
        self.calls: list[lg.Call] = []

    async def __call__(self, call: lg.Call, call_next: lg.Handler) -> Any:
        self.calls.append(call)
        return await call_next(call)


async def test_completion_returns_litellm_response_with_usage_and_cost() -> None:
    """The guarded acompletion returns litellm's ModelResponse; stats() sums tokens and USD cost
    from litellm's cost map, per model."""
    chat = lg_litellm.completion(lg.Pipeline(name="chat"))
    response = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello")
    assert response.choices[0].message.content == "Hello"
    stats = chat.stats()["litellm"]
    assert (stats.calls, stats.failures, stats.uncosted) == (1, 0, 0)
    assert stats.input_tokens == response.usage.prompt_tokens
    assert stats.output_tokens == response.usage.completion_tokens
    assert stats.cost_usd == pytest.approx(litellm.completion_cost(completion_response=response))
    assert stats.cost_usd > 0
    assert dict(stats.cost_by_model) == {"gpt-4o-mini": stats.cost_usd}


async def test_cost_and_usage_are_annotated_for_outer_layers() -> None:
    """Outer layers (Metrics) read the cost and usage from the call's record."""
    notes = Notes()
    chat = lg_litellm.completion(lg.Pipeline(notes))
    response = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="Hi")
    (call,) = notes.calls
    assert call.record.cost == pytest.approx(chat.stats()["litellm"].cost_usd)
    assert call.record.usage == lg.Usage(response.usage.prompt_tokens, response.usage.completion_tokens)


async def test_unpriced_model_counts_tokens_but_no_cost() -> None:
    """A model litellm's cost map does not know still counts usage; its cost is reported as
    uncosted, never invented."""
    chat = lg_litellm.completion()
    await chat(model="openai/my-private-finetune-xyz", messages=MESSAGES, mock_response="Hi")
    stats = chat.stats()["litellm"]
    assert (stats.uncosted, stats.cost_usd) == (1, 0.0)
    assert stats.input_tokens > 0


async def test_embedding_is_guarded_and_accounted() -> None:
    """embedding(pipeline) guards litellm.aembedding and accounts its usage."""
    embed = lg_litellm.embedding(lg.Pipeline())
    response = await embed(
        model="text-embedding-3-small", input=["hello world"], mock_response=[0.1, 0.2, 0.3]
    )
    assert response.data[0]["embedding"] == [0.1, 0.2, 0.3]
    assert embed.stats()["litellm"].calls == 1


def test_count_tokens_uses_the_model_tokenizer_and_reserves_output() -> None:
    """count_tokens is litellm.token_counter for the prompt plus max_tokens (or the default
    reservation); calls without messages fall back to llmguard.estimate_tokens."""
    prompt = litellm.token_counter(model="gpt-4o-mini", messages=MESSAGES)
    assert count_tokens(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50) == prompt + 50
    assert count_tokens(model="gpt-4o-mini", messages=MESSAGES) == (
        prompt + DEFAULT_OUTPUT_RESERVE
    )
    assert count_tokens("a bare prompt") == lg.estimate_tokens("a bare prompt")
    assert count_tokens(model="text-embedding-3-small", input="hello world") == (
        litellm.token_counter(model="text-embedding-3-small", text="hello world")
    )


async def test_rate_limit_reserves_litellm_count_and_reconciles_to_usage() -> None:
    """RateLimit(tokens=count_tokens) reserves litellm's count, then reconciles to the usage the
    response reports, so nothing stays reserved (a sliding log: the default ``refill="auto"``
    keeps what a server that reports no tokens was reserved until probes show it gives the
    unused part back, ``test_refusal.py``)."""
    notes = Notes()
    limit = lg.RateLimit(tpm=100_000, tokens=count_tokens, refill="window")
    chat = lg_litellm.completion(lg.Pipeline(notes, limit))
    await chat(model="gpt-4o-mini", messages=MESSAGES, max_tokens=40, mock_response="Hi")
    assert notes.calls[0].tokens == count_tokens(model="gpt-4o-mini", messages=MESSAGES, max_tokens=40)
    stats = limit.statistics()
    assert stats.reserved_tokens == 0
    assert stats.tokens_available == 100_000 - notes.calls[0].record.usage.total_tokens


async def test_context_check_refuses_oversized_prompt_before_sending(sent: list) -> None:
    """check_context=True raises ContextWindowExceededError (kind CONTEXT_WINDOW) for a prompt
    longer than the model's window, without sending it, and counts the refusal."""
    chat = lg_litellm.completion(check_context=True)
    huge = [{"role": "user", "content": "word " * 20_000}]
    with pytest.raises(litellm.ContextWindowExceededError, match="accepts at most 16385") as info:
        await chat(model="gpt-3.5-turbo", messages=huge, mock_response="never")
    assert classify(info.value).kind is FailureKind.CONTEXT_WINDOW
    assert sent == []
    assert chat.stats()["litellm"].context_refusals == 1
    await chat(model="gpt-3.5-turbo", messages=MESSAGES, mock_response="fits")
    assert len(sent) == 1


async def test_failures_are_counted_and_propagate_unchanged() -> None:
    """A litellm error reaches the caller as litellm raised it, and stats count the failure."""
    chat = lg_litellm.completion()
    with pytest.raises(litellm.RateLimitError):
        await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError")
    stats = chat.stats()["litellm"]
    assert (stats.calls, stats.failures, stats.cost_usd) == (1, 1, 0.0)


def _exc(cls: type, message: str, status: int | None = None, headers: dict | None = None) -> Exception:
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "llm_provider": "openai"}
    if status is not None:
        request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
        kwargs["response"] = httpx.Response(status, headers=headers or {}, request=request)
    return cls(message, **kwargs)


CASES = [
    ("litellm.RateLimitError", FailureKind.RATE_LIMITED),
    ("litellm.ContextWindowExceededError", FailureKind.CONTEXT_WINDOW),
    ("litellm.InternalServerError", FailureKind.SERVER_ERROR),
    (_exc(litellm.RateLimitError, "You exceeded your current quota"), FailureKind.QUOTA_EXHAUSTED),
    (_exc(litellm.ContentPolicyViolationError, "rejected by our safety system"), FailureKind.CONTENT_POLICY),
    (_exc(litellm.ServiceUnavailableError, "The server is overloaded"), FailureKind.OVERLOADED),
    (_exc(litellm.Timeout, "Request timed out"), FailureKind.TIMEOUT),
    (_exc(litellm.APIConnectionError, "Connection error"), FailureKind.CONNECTION),
    (_exc(litellm.AuthenticationError, "Incorrect API key"), FailureKind.AUTH),
    (_exc(litellm.PermissionDeniedError, "forbidden", 403), FailureKind.AUTH),
    (_exc(litellm.BadRequestError, "bad parameter"), FailureKind.BAD_REQUEST),
    (_exc(litellm.NotFoundError, "model not found"), FailureKind.BAD_REQUEST),
    (_exc(litellm.BadGatewayError, "bad gateway"), FailureKind.SERVER_ERROR),
]


@pytest.mark.parametrize("mock, kind", CASES, ids=lambda v: getattr(v, "value", None) or type(v).__name__ if not isinstance(v, str) else v)
async def test_every_litellm_exception_is_classified(mock: Any, kind: FailureKind) -> None:
    """Each litellm exception, raised by the real acompletion (mock_response as string form or
    exception object), is classified to its kind."""
    chat = lg_litellm.completion()
    with pytest.raises(Exception) as info:
        await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response=mock)
    assert isinstance(info.value, litellm.exceptions.OpenAIError) or "litellm" in type(info.value).__module__
    assert classify(info.value).kind is kind


async def test_retry_after_from_a_litellm_429_is_read() -> None:
    """A litellm RateLimitError carrying the provider's Retry-After header is classified with it."""
    error = _exc(litellm.RateLimitError, "slow down", 429, {"retry-after": "7"})
    chat = lg_litellm.completion()
    with pytest.raises(litellm.RateLimitError) as info:
        await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response=error)
    assert classify(info.value).retry_after == 7.0


def test_import_llmguard_imports_no_client_library() -> None:
    """`import llmguard` and importing both integration modules load none of litellm, openai,
    httpx: the libraries are imported on first use."""
    code = (
        "import sys, llmguard, llmguard.integrations.litellm, llmguard.integrations.openai;"
        "print(sorted(m for m in ('litellm', 'openai', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_streamed_completion_passes_through() -> None:
    """stream=True returns a stream of litellm chunks that spell the mock response."""
    chat = lg_litellm.completion(lg.Pipeline(lg.ConcurrencyLimit(1)))
    stream = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello there", stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "Hello there"
    assert chat.stats()["concurrency_limit"].in_flight == 0


async def test_streamed_usage_reconciles_the_token_reservation() -> None:
    """With ``include_usage`` litellm's final chunk carries usage: RateLimit holds the estimate
    while the stream runs, then settles to the tokens the stream reported (a sliding log, as
    above)."""
    limit = lg.RateLimit(tpm=100_000, refill="window")
    chat = lg_litellm.completion(lg.Pipeline(limit))
    stream = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="Hello there",
                        stream=True, stream_options={"include_usage": True}, max_tokens=1000)
    assert limit.statistics().reserved_tokens > 1000
    chunks = [chunk async for chunk in stream]
    used = chunks[-1].usage.total_tokens
    stats = limit.statistics()
    assert stats.reserved_tokens == 0 and stats.tokens_available == 100_000 - used


def _openai_behind_litellm(*responses: httpx.Response) -> tuple[Any, list[httpx.Request]]:
    """An AsyncOpenAI client answered by MockTransport, for litellm's ``client=`` argument, so
    the real litellm -> openai SDK -> HTTP path runs offline."""
    import openai

    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return responses[min(len(requests), len(responses)) - 1]

    client = openai.AsyncOpenAI(
        api_key="test", base_url="http://openai.test/v1", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return client, requests


HEADERS = {"x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "30s",
           "x-ratelimit-remaining-tokens": "700", "x-ratelimit-reset-tokens": "30s"}
BODY = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "over HTTP"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
RATE_LIMITED = httpx.Response(
    429, headers={"retry-after": "9", **HEADERS, "x-ratelimit-remaining-requests": "0"},
    json={"error": {"message": "Rate limit reached for requests", "type": "requests",
                    "param": None, "code": "rate_limit_exceeded"}},
)


async def test_provider_rate_limit_headers_through_litellm_feed_the_rate_limit() -> None:
    """The x-ratelimit-* headers litellm passes on (prefixed ``llm_provider-``) reach
    RateLimit.observe_headers, so its headroom follows the provider's."""
    client, requests = _openai_behind_litellm(httpx.Response(200, json=BODY, headers=HEADERS))
    limit = lg.RateLimit(rpm=500, tpm=100_000)
    chat = lg_litellm.completion(lg.Pipeline(limit))
    response = await chat(model="openai/gpt-4o-mini", messages=MESSAGES, client=client)
    assert response.choices[0].message.content == "over HTTP"
    assert len(requests) == 1
    stats = limit.statistics()
    assert stats.requests_available <= 4
    assert stats.tokens_available <= 700


async def test_a_429_through_litellm_pauses_the_rate_limit() -> None:
    """A real 429 through litellm is a RateLimitError; its headers reach RateLimit."""
    client, _ = _openai_behind_litellm(RATE_LIMITED)
    limit = lg.RateLimit(rpm=500)
    chat = lg_litellm.completion(lg.Pipeline(limit))
    with pytest.raises(litellm.RateLimitError):
        await chat(model="openai/gpt-4o-mini", messages=MESSAGES, client=client)
    stats = limit.statistics()
    assert (stats.requests_available, stats.rate_limited) == (0, 1)


async def test_retry_after_of_a_real_429_through_litellm_is_classified() -> None:
    """The provider's Retry-After on a 429 that came through litellm's HTTP path is read."""
    client, _ = _openai_behind_litellm(RATE_LIMITED)
    chat = lg_litellm.completion()
    with pytest.raises(litellm.RateLimitError) as info:
        await chat(model="openai/gpt-4o-mini", messages=MESSAGES, client=client)
    assert classify(info.value).retry_after == 9.0




# Full pipelines: Retry and Fallback around the real litellm.


async def test_litellm_alone_multiplies_attempts_when_it_retries(sent: list) -> None:
    """The problem being solved: with litellm.num_retries=2 set globally, one bare acompletion is
    3 requests."""
    litellm.num_retries = 2
    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError")
    assert len(sent) == 3


async def test_no_double_retries_under_a_retry_layer(sent: list) -> None:
    """Under Retry(attempts=3), litellm's own retries are off even when litellm.num_retries is
    set globally: 3 attempts are exactly 3 requests (not 9)."""
    litellm.num_retries = 2
    chat = lg_litellm.completion(lg.Pipeline().retry(attempts=3))
    with pytest.raises(litellm.RateLimitError):
        await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError")
    assert len(sent) == 3
    assert chat.stats()["litellm"].failures == 3


async def test_explicit_litellm_retries_under_retry_are_refused(sent: list) -> None:
    """#20 item 11: passing num_retries=2 under a Retry layer would multiply attempts by more
    than any warning could say (litellm's retries times the SDK's): it is refused, unsent."""
    chat = lg_litellm.completion(lg.Pipeline().retry(attempts=2))
    with pytest.raises(ValueError, match="num_retries=2 would make litellm retry"):
        await chat(model="gpt-4o-mini", messages=MESSAGES, num_retries=2,
                   mock_response="litellm.RateLimitError")
    assert len(sent) == 0


async def test_retry_recovers_from_transient_litellm_errors(sent: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """A RateLimitError then a success: Retry sends the call again and returns the answer."""
    answers = iter(["litellm.RateLimitError", "recovered"])
    recording = litellm.main.mock_completion

    def scripted(model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        kwargs["mock_response"] = next(answers)
        return recording(model, messages, *args, **kwargs)

    monkeypatch.setattr(litellm.main, "mock_completion", scripted)
    chat = lg_litellm.completion(lg.Pipeline().retry(attempts=3))
    response = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="unused")
    assert response.choices[0].message.content == "recovered"
    assert chat.stats()["litellm"].calls == 2


async def test_fallback_by_model_name(sent: list) -> None:
    """Fallback({"model": ...}) overrides the model: after the primary's retries fail with a
    server error, the call goes to the fallback model, and the spend is booked to it."""
    pipeline = lg.Pipeline().fallback({"model": "gpt-4o", "mock_response": "from gpt-4o"}).retry(attempts=2)
    chat = lg_litellm.completion(pipeline)
    response = await chat(model="gpt-4o-mini", messages=MESSAGES, mock_response="litellm.InternalServerError")
    assert response.choices[0].message.content == "from gpt-4o"
    assert [s["model"] for s in sent] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    assert list(chat.stats()["litellm"].cost_by_model) == ["gpt-4o"]


async def test_context_window_routes_to_a_bigger_model_without_retrying(sent: list) -> None:
    """A ContextWindowExceededError from the provider is not retried: Fallback routes the same
    messages to the larger-context model at once."""
    pipeline = lg.Pipeline().fallback({"model": "gpt-4o", "mock_response": "long answer"}).retry(attempts=4)
    chat = lg_litellm.completion(pipeline)
    response = await chat(model="gpt-3.5-turbo", messages=MESSAGES,
                          mock_response="litellm.ContextWindowExceededError")
    assert response.choices[0].message.content == "long answer"
    assert [s["model"] for s in sent] == ["gpt-3.5-turbo", "gpt-4o"]


async def test_context_check_routes_before_sending(sent: list) -> None:
    """With check_context=True, an oversized prompt never reaches the small model: the local
    refusal sends Fallback straight to the larger one."""
    pipeline = lg.Pipeline().fallback({"model": "gpt-4o"}).retry(attempts=4)
    chat = lg_litellm.completion(pipeline, check_context=True)
    huge = [{"role": "user", "content": "word " * 20_000}]
    response = await chat(model="gpt-3.5-turbo", messages=huge, mock_response="fits in 128k")
    assert response.choices[0].message.content == "fits in 128k"
    assert [s["model"] for s in sent] == ["gpt-4o"]
    assert chat.stats()["litellm"].context_refusals == 1


def _sse(*chunks: dict[str, Any]) -> bytes:
    import json

    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _chunk(content: str | None, usage: dict[str, int] | None = None,
           finish: str | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content},
                                           "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": choices, "usage": usage}


async def test_streams_report_usage_cost_and_rate_limit_headers() -> None:
    """#20 item 10: a streamed call through litellm shows its tokens and cost in
    stats()["litellm"] and on the Metrics layer (llmguard.cost), and the stream's x-ratelimit-*
    headers reach RateLimit."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    body = _sse(_chunk("Hello"), _chunk(" there"), _chunk("", finish="stop"),
                _chunk(None, {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}))
    client, _ = _openai_behind_litellm(httpx.Response(
        200, content=body, headers={**HEADERS, "content-type": "text/event-stream"}))
    reader = InMemoryMetricReader()
    limit = lg.RateLimit(rpm=500, tpm=100_000)
    chat = lg_litellm.completion(lg.Pipeline(
        lg.Metrics(meter_provider=MeterProvider(metric_readers=[reader]), name="s"), limit))
    stream = await chat(model="openai/gpt-4o-mini", messages=MESSAGES, client=client,
                        stream=True, stream_options={"include_usage": True})
    assert limit.statistics().requests_available <= 4  # headers arrive before the chunks
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello there"
    stats = chat.stats()["litellm"]
    assert (stats.input_tokens, stats.output_tokens) == (5, 2)
    assert stats.cost_usd > 0
    data = reader.get_metrics_data()
    found = {m.name: m for r in data.resource_metrics for sc in r.scope_metrics for m in sc.metrics}
    (cost,) = found["llmguard.cost"].data.data_points
    assert cost.value == pytest.approx(stats.cost_usd)


async def test_provider_and_operation_are_set_from_litellm(sent: list) -> None:
    """#20 items 5 and 6: the integration sets ``gen_ai.provider.name`` from litellm's routing
    (in the conventions' spelling) and records embeddings as ``embeddings``."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    chat = lg_litellm.completion(lg.Pipeline(lg.Metrics(meter_provider=provider)))
    await chat(model="anthropic/claude-3-5-haiku-20241022", messages=MESSAGES,
               mock_response="hi")
    embed = lg_litellm.embedding(lg.Pipeline(lg.Metrics(meter_provider=provider)))
    await embed(model="text-embedding-3-small", input=["hi"], mock_response=[0.1, 0.2])
    data = reader.get_metrics_data()
    points = [p for r in data.resource_metrics for sc in r.scope_metrics for m in sc.metrics
              if m.name == "gen_ai.client.operation.duration" for p in m.data.data_points]
    seen = {(p.attributes[GA.GEN_AI_OPERATION_NAME], p.attributes[GA.GEN_AI_PROVIDER_NAME])
            for p in points}
    assert seen == {("chat", GA.GenAiProviderNameValues.ANTHROPIC.value),
                    ("embeddings", GA.GenAiProviderNameValues.OPENAI.value)}
