"""llmguard.integrations.anthropic driving the real anthropic SDK against a loopback HTTP server
that speaks the Messages API (JSON and server-sent events) with Anthropic's rate-limit headers
(``llmguard.testing.InputOutputBucketServer`` behind ``LoopbackServer``). Real sockets, so real
time: quotas are sized never to make a test wait, except the 429 test's (a 3 s bucket)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

import llmguard as lg
from llmguard import FailureKind, classify
from llmguard.integrations import anthropic as lg_anthropic
from llmguard.testing import InputOutputBucketServer, LoopbackServer

anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.looptime(False)

MESSAGES = [{"role": "user", "content": "Say hello."}]
OUTPUT = 30


def server(**quotas: Any) -> InputOutputBucketServer:
    quotas = quotas or {"rpm": 1_000, "input_tpm": 100_000, "output_tpm": 20_000}
    return InputOutputBucketServer(latency=0.01, output_tokens=OUTPUT, **quotas)


#: Clients made by the running test, closed after it (an unclosed one leaves its sockets to the
#: garbage collector, whose ResourceWarning would land in a later test).
OPEN: list[Any] = []


@pytest.fixture(autouse=True)
async def close_clients() -> Any:
    yield
    while OPEN:
        await OPEN.pop().close()


def client(http: LoopbackServer, max_retries: int = 0) -> Any:
    made = anthropic.AsyncAnthropic(base_url=http.origin, api_key="test", max_retries=max_retries)
    OPEN.append(made)
    return made


def rate_limit() -> lg.RateLimit:
    return lg.RateLimit(rpm=1_000, input_tpm=100_000, output_tpm=20_000, refill="continuous")


def headroom(limit: lg.RateLimit, part: str) -> int:
    return limit.backend.part_headroom(None, limit.quotas, part)  # type: ignore[attr-defined]


async def test_create_returns_the_message_and_records_usage_provider_and_server() -> None:
    """messages.create through wrap(): the SDK's Message comes back; the call's record names
    provider anthropic, the loopback server and operation chat, with the answer's usage; the
    RateLimit's output quota is charged the output used, not max_tokens."""
    limit = rate_limit()
    provider = server()
    async with LoopbackServer(provider) as http:
        guarded = lg_anthropic.wrap(client(http), lg.Pipeline(name="claude").then(limit))
        with lg.recording() as calls:
            message = await guarded.messages.create(model="claude", max_tokens=500,
                                                    system="Be brief.", messages=MESSAGES)
    assert isinstance(message, anthropic.types.Message)
    assert message.usage.output_tokens == OUTPUT
    [record] = calls
    assert (record.provider, record.server, record.operation) == (
        "anthropic", ("127.0.0.1", http.port), "chat")
    assert record.usage == lg.Usage(message.usage.input_tokens, OUTPUT)
    assert limit.statistics().in_flight == 0
    now = asyncio.get_running_loop().time()  # both buckets refill alike: compare at one instant
    assert headroom(limit, "output") <= provider.quotas["output-tokens"].remaining(now) + 1
    assert headroom(limit, "output") > 20_000 - 500  # given back down from max_tokens


async def test_streamed_create_settles_the_output_at_the_end_of_the_stream() -> None:
    """create(stream=True) yields the raw events; the output reservation (max_tokens) is held
    while the stream is read and settled to message_delta's output_tokens when it ends (the
    input coming from message_start): given back once the server's readings show it gives
    unused output back (its headers, as of the stream's start, cannot: never above the
    server's remaining; streams learning it: ``test_header_reads``)."""
    limit, provider = rate_limit(), server()
    async with LoopbackServer(provider) as http:
        guarded = lg_anthropic.wrap(client(http), lg.Pipeline(name="claude").then(limit))
        with lg.recording() as calls:
            stream = await guarded.messages.create(model="claude", max_tokens=500,
                                                   messages=MESSAGES, stream=True)
            assert limit.statistics().in_flight == 1
            kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert limit.statistics().in_flight == 0
    assert calls[0].usage.output_tokens == OUTPUT and calls[0].usage.input_tokens > 0
    now = asyncio.get_running_loop().time()
    assert 20_000 - 500 <= headroom(limit, "output") <= provider.quotas[
        "output-tokens"].remaining(now) + 1


async def test_messages_stream_gives_the_sdks_helpers_and_settles_on_exit() -> None:
    """messages.stream() is guarded too: ``async with`` yields the SDK's AsyncMessageStream
    (text_stream, get_final_message) over the pipeline's stream; leaving early settles the
    reservation (kept whole: no message_delta said what was used)."""
    limit = rate_limit()
    async with LoopbackServer(server()) as http:
        guarded = lg_anthropic.wrap(client(http), lg.Pipeline(name="claude").then(limit))
        async with guarded.messages.stream(model="claude", max_tokens=500,
                                           messages=MESSAGES) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "x" * 4 * OUTPUT and final.usage.output_tokens == OUTPUT
        assert limit.statistics().in_flight == 0
        async with guarded.messages.stream(model="claude", max_tokens=500,
                                           messages=MESSAGES) as stream:
            async for _event in stream:
                break
        assert limit.statistics().in_flight == 0
        assert limit.statistics().admitted == 2


async def test_anthropic_headers_drain_the_input_and_output_quotas() -> None:
    """The server's anthropic-ratelimit-input-tokens-remaining and -output-tokens-remaining
    (after another client's use) bring the RateLimit's input and output buckets down to them."""
    provider = server()
    async with LoopbackServer(provider) as http:
        other = client(http)
        for _ in range(3):  # someone else spends from the same quota
            await other.messages.create(model="claude", max_tokens=4_000, messages=MESSAGES)
        limit = rate_limit()
        guarded = lg_anthropic.wrap(client(http), lg.Pipeline(name="claude").then(limit))
        await guarded.messages.create(model="claude", max_tokens=100, messages=MESSAGES)
    now = asyncio.get_running_loop().time()
    assert headroom(limit, "output") <= provider.quotas["output-tokens"].remaining(now) + 1
    assert headroom(limit, "input") <= provider.quotas["input-tokens"].remaining(now) + 1


async def test_a_429_with_retry_after_pauses_and_is_retried() -> None:
    """A 3 s output bucket of 200 tokens: the second call of max_tokens=150 gets a 429 with
    retry-after; the SDK's RateLimitError is classified rate_limited with that delay, the
    RateLimit pauses, and Retry sends it again after the pause: both calls succeed."""
    provider = InputOutputBucketServer(output_tpm=200, window=3.0, latency=0.01,
                                       output_tokens=150)
    seen: list[Any] = []
    pipeline = (lg.Pipeline(name="claude").retry(attempts=3, backoff=0.01)
                .rate_limit(rpm=1_000))
    async with LoopbackServer(provider) as http:
        guarded = lg_anthropic.wrap(client(http), pipeline)
        with lg.recording() as calls:
            for _ in range(2):
                await guarded.messages.create(model="claude", max_tokens=150, messages=MESSAGES)
        try:
            await client(http).messages.create(model="claude", max_tokens=150, messages=MESSAGES)
        except anthropic.RateLimitError as exc:
            seen.append(exc)
    assert provider.statistics().rate_limited >= 1
    assert calls[1].retries >= 1
    assert pipeline.layers[-1].statistics().rate_limited >= 1
    [exc] = seen
    failure = classify(exc)
    assert failure.kind is FailureKind.RATE_LIMITED and 0 < failure.retry_after <= 3.0


async def test_guard_one_method_and_no_double_retries() -> None:
    """guard(client.messages.create, pipeline) guards that method alone; under Retry a client
    with its own retries is swapped for a copy with max_retries=0, with a warning."""
    async with LoopbackServer(server()) as http:
        plain = client(http, max_retries=2)
        with pytest.warns(UserWarning, match="max_retries=2"):
            create = lg_anthropic.guard(plain.messages.create,
                                        lg.Pipeline(name="one").retry(attempts=2))
        message = await create(model="claude", max_tokens=10, messages=MESSAGES)
        assert message.usage.output_tokens == 10
        assert plain.max_retries == 2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lg_anthropic.wrap(client(http), lg.Pipeline(name="quiet").retry(attempts=2))


def test_wrap_and_guard_reject_what_they_cannot_guard() -> None:
    """Errors name what is expected and what to use instead."""
    with pytest.raises(TypeError, match="wrap_client"):
        lg_anthropic.wrap(object(), lg.Pipeline())
    with pytest.raises(TypeError, match="pipeline.wrap"):
        lg_anthropic.guard(print, lg.Pipeline())
    with pytest.raises(TypeError, match="llmguard.Pipeline"):
        lg_anthropic.wrap(anthropic.AsyncAnthropic(api_key="test"), object())
    with pytest.raises(ValueError, match="messages.create"):
        lg_anthropic.wrap(anthropic.AsyncAnthropic(api_key="test"), lg.Pipeline(),
                          methods=("completions.create",))


async def test_metrics_export_the_genai_attributes_of_anthropic_calls() -> None:
    """Metrics over the wrapped client: gen_ai.provider.name anthropic, server.address, the
    operation chat, and input and output token usage."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from tests.otel_helpers import collect

    reader = InMemoryMetricReader()
    pipeline = lg.Pipeline(name="claude").metrics(
        meter_provider=MeterProvider(metric_readers=[reader]))
    async with LoopbackServer(server()) as http:
        guarded = lg_anthropic.wrap(client(http), pipeline)
        await guarded.messages.create(model="claude", max_tokens=100, messages=MESSAGES)
    metrics = collect(reader)
    [point] = metrics["gen_ai.client.operation.duration"].data.data_points
    attributes = point.attributes
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["server.address"] == "127.0.0.1"
    usage = {p.attributes["gen_ai.token.type"]: p.sum
             for p in metrics["gen_ai.client.token.usage"].data.data_points}
    assert usage["output"] == OUTPUT and usage["input"] > 0


def test_litellm_passes_anthropics_rate_limit_headers_on() -> None:
    """Through litellm (``llm_provider-`` prefixed), Anthropic's rate-limit headers reach the
    RateLimit too, not only OpenAI's x-ratelimit-*."""
    from llmguard._upstream.litellm import rate_headers

    kept = rate_headers({"llm_provider-anthropic-ratelimit-output-tokens-remaining": "5",
                         "llm_provider-x-ratelimit-remaining-requests": "7",
                         "llm_provider-request-id": "req_1"})
    assert kept == {"anthropic-ratelimit-output-tokens-remaining": "5",
                    "x-ratelimit-remaining-requests": "7"}


@pytest.mark.parametrize("gives_back", [True, False])
async def test_the_output_give_back_is_learned_from_the_sdks_headers(gives_back: bool) -> None:
    """Through the SDK, the answers' anthropic-ratelimit-output-tokens-remaining tell the
    RateLimit whether the server gave unused output back (``refunds_output``): 40 calls at once
    reserving max_tokens=200 and using 30, each answered in 1 s (readings are judged only once
    ours sent before them have surely arrived: the margin, 0.5 s); its statistics say what it
    learned, and the output bucket never holds more than the server's."""
    provider = InputOutputBucketServer(rpm=1_000, input_tpm=100_000, output_tpm=20_000,
                                       latency=1.0, output_tokens=OUTPUT,
                                       refunds_output=gives_back)
    limit = lg.RateLimit(rpm=1_000, input_tpm=100_000, output_tpm=20_000)
    async with LoopbackServer(provider) as http:
        guarded = lg_anthropic.wrap(client(http), lg.Pipeline(name="claude").then(limit))
        await asyncio.gather(*(guarded.messages.create(model="claude", max_tokens=200,
                                                       messages=MESSAGES) for _ in range(40)))
    said = ("unused output given back (the server does)" if gives_back else
            "max_tokens kept charged (the server does not give unused output back)")
    assert said in limit.statistics().shape
    now = asyncio.get_running_loop().time()
    assert headroom(limit, "output") <= provider.quotas["output-tokens"].remaining(now) + 1
