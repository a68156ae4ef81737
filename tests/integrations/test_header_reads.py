"""Each answer's rate-limit headers are read once (handed once to the quota state: ``report``),
through the real anthropic and openai SDKs against loopback servers, for a RateLimit (input and
output quotas apart too) and a Router, answers and 429s alike. Real sockets, so real time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit import feedback
from llmguard._routing import learn
from llmguard.integrations import anthropic as lg_anthropic
from llmguard.integrations import openai as lg_openai
from llmguard.testing import InputOutputBucketServer, LoopbackServer, TokenBucketServer

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytestmark = pytest.mark.looptime(False)

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each headers object was read (by its id), by a RateLimit or a Router."""
    counts: Counter[int] = Counter()
    headers_seen: list[Any] = []  # kept alive: no id reused within the test

    def counting(read: Any) -> Any:
        def report(backend: Any, quotas: Any, learning: bool, headers: Any, *rest: Any) -> None:
            counts[id(headers)] += 1
            headers_seen.append(headers)
            read(backend, quotas, learning, headers, *rest)

        return report

    monkeypatch.setattr(feedback, "report", counting(feedback.report))
    monkeypatch.setattr(learn, "report", counting(learn.report))
    return counts


@pytest.fixture
def against(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each reading by a RateLimit: was it read against the reservation of its call?"""
    seen: list[bool] = []
    observe = lg.RateLimit.observe_headers

    def observing(self: Any, headers: Any, **kwargs: Any) -> None:
        held = feedback.HELD.get()
        seen.append(held is not None and held.ticket is not None)
        observe(self, headers, **kwargs)

    monkeypatch.setattr(lg.RateLimit, "observe_headers", observing)
    return seen


async def readme_rounds(send: Callable[[Any], Awaitable[Any]]) -> tuple[int, int, lg.RateLimit]:
    """The README's Anthropic stack (rpm, input_tpm and output_tpm, refill="continuous")
    through the real SDK, four rounds of three ``send(guarded)`` at once against a server of
    those quotas using 30 output tokens an answer: what the server has left of its output
    quota then, the layer's output headroom, and the layer."""
    provider = InputOutputBucketServer(rpm=1_000, input_tpm=100_000, output_tpm=20_000,
                                       latency=0.01, output_tokens=30)
    limit = lg.RateLimit(rpm=1_000, input_tpm=100_000, output_tpm=20_000, refill="continuous")
    async with LoopbackServer(provider) as http, anthropic.AsyncAnthropic(
            base_url=http.origin, api_key="test", max_retries=0) as client:
        guarded = lg_anthropic.wrap(client, lg.Pipeline(name="claude").then(limit))
        for _ in range(4):
            await asyncio.gather(*(send(guarded) for _ in range(3)))
    left = provider.quotas["output-tokens"].remaining(asyncio.get_running_loop().time())
    output = limit.backend.part_headroom(None, limit.quotas, "output")  # type: ignore[attr-defined]
    return left, output, limit


async def test_anthropic_answers_are_read_once_with_input_and_output_apart(reads) -> None:
    """The README's Anthropic stack (rpm, input_tpm and output_tpm, refill="continuous"), four
    rounds of three calls at once asking max_tokens=2,000 and using 30: each of the twelve
    answers read once, and the output headroom keeps pace with what the server has left,
    never above it. (Read twice, before and after each answer was settled, the headroom fell
    to 10 tokens while the server had 19,976 left: every answer's unused output held back.)"""
    left, output, _ = await readme_rounds(lambda guarded: guarded.messages.create(
        model="claude", max_tokens=2_000, messages=MESSAGES))
    assert sorted(reads.values()) == [1] * 12
    assert left - 1_000 <= output <= left + 1


async def test_a_429_at_a_router_deployment_is_read_once(reads) -> None:
    """anthropic through a Router: another client spends the output quota, ours gets a 429:
    its headers read once (they were read twice: by the header observer, then again as the
    attempt failed)."""
    provider = InputOutputBucketServer(output_tpm=300, latency=0.01, output_tokens=150)
    router = lg.Router(lg.Deployment({"model": "claude"}, name="a", rpm=1_000))
    async with LoopbackServer(provider) as http, anthropic.AsyncAnthropic(
            base_url=http.origin, api_key="test", max_retries=0) as client:
        guarded = lg_anthropic.wrap(client, lg.Pipeline(name="claude").then(router))
        for _ in range(2):
            await client.messages.create(model="claude", max_tokens=150, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError):
            await guarded.messages.create(model="claude", max_tokens=150, messages=MESSAGES)
    assert provider.statistics().rate_limited == 1
    assert list(reads.values()) == [1]


async def test_openai_answers_and_429s_are_read_once(reads) -> None:
    """openai through a Router and through a RateLimit, against a server of 2 requests a
    minute: an answer, another client's request, then ours gets a 429; every answer's headers
    read once."""
    for layer in (lg.Router(lg.Deployment({"model": "m"}, name="a", rpm=1_000)),
                  lg.RateLimit(rpm=1_000)):
        provider = TokenBucketServer(rpm=2, latency=0.01)
        async with LoopbackServer(provider) as http, openai.AsyncOpenAI(
                base_url=http.base_url, api_key="test", max_retries=0) as client:
            guarded = lg_openai.wrap(client, lg.Pipeline(name="chat").then(layer))
            await guarded.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
            await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
            with pytest.raises(openai.RateLimitError):
                await guarded.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
        assert provider.statistics().rate_limited == 1
        assert sorted(reads.values()) == [1, 1], layer
        reads.clear()


async def _streamed(guarded: Any, how: str) -> None:
    """One answer streamed to its end: ``create(stream=True)`` or ``messages.stream()``."""
    if how == "create":
        stream = await guarded.messages.create(model="claude", max_tokens=2_000,
                                               messages=MESSAGES, stream=True)
        async for _event in stream:
            pass
    else:
        async with guarded.messages.stream(model="claude", max_tokens=2_000,
                                           messages=MESSAGES) as stream:
            async for _event in stream:
                pass


@pytest.mark.parametrize("how", ["create", "stream"])
async def test_anthropic_streams_are_read_once_against_their_reservation(
        reads, against, how) -> None:
    """The README's Anthropic stack, streamed (``create(stream=True)`` and ``messages.stream``),
    four rounds of three at once asking max_tokens=2,000 and using 30: each stream's headers
    read once, as it starts, against its reservation (a stream is settled only when it ends,
    so there is no reading after it to take its place); they show the server giving unused
    output back, and the output headroom keeps pace with what the server has left once the
    streams ended, never above it, at most the unused output of the round's two others below
    (ended before the third's headers were read, as of its admission: not given back there
    yet). Before, with readings as of a stream's start, the give-back was never learned: 10
    tokens of room where the server had 19,975, every stream's unused output held back."""
    left, output, limit = await readme_rounds(lambda guarded: _streamed(guarded, how))
    assert sorted(reads.values()) == [1] * 12
    assert against == [True] * 12
    assert limit.statistics().in_flight == 0
    assert "unused output given back (the server does)" in limit.statistics().shape
    assert left - 2 * 2_000 <= output <= left + 1


async def test_openai_streams_are_read_once_against_their_reservation(reads, against) -> None:
    """openai's chat completions streamed (``stream=True``, usage in the last chunk) through a
    RateLimit of total tokens and one of input and output apart, three rounds of three at
    once: each stream's headers read once, as it starts, against its reservation, and the
    token headroom never above what the server has left."""
    for limit in (lg.RateLimit(rpm=1_000, tpm=100_000, charge="reserved"),
                  lg.RateLimit(rpm=1_000, input_tpm=50_000, output_tpm=50_000)):
        provider = TokenBucketServer(rpm=1_000, tpm=100_000, latency=0.01)
        async with LoopbackServer(provider) as http, openai.AsyncOpenAI(
                base_url=http.base_url, api_key="test", max_retries=0) as client:
            guarded = lg_openai.wrap(client, lg.Pipeline(name="chat").then(limit))

            async def streamed() -> lg.Usage | None:
                stream = await guarded.chat.completions.create(
                    model="m", messages=MESSAGES, max_tokens=200, stream=True,
                    stream_options={"include_usage": True})
                async for _chunk in stream:
                    pass
                return stream.usage

            for _ in range(3):
                used = await asyncio.gather(*(streamed() for _ in range(3)))
                assert all(usage is not None and usage.output_tokens for usage in used)
        assert sorted(reads.values()) == [1] * 9, limit
        assert against == [True] * 9, limit
        assert limit.statistics().in_flight == 0
        if limit.backend.__class__.__name__ != "SplitBackend":  # (no part in openai's headers)
            left = provider.quotas["tokens"].remaining(asyncio.get_running_loop().time())
            assert limit.statistics().tokens_available <= left + 1
        reads.clear()
        against.clear()
