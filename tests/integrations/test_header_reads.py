"""Each answer's rate-limit headers are read once (handed once to the quota state: ``report``),
through the real anthropic and openai SDKs against loopback servers, for a RateLimit (input and
output quotas apart too) and a Router, answers and 429s alike. Real sockets, so real time."""

from __future__ import annotations

import asyncio
from collections import Counter
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


async def test_anthropic_answers_are_read_once_with_input_and_output_apart(reads) -> None:
    """The README's Anthropic stack (rpm, input_tpm and output_tpm, refill="continuous"), four
    rounds of three calls at once asking max_tokens=2,000 and using 30: each of the twelve
    answers read once, and the output headroom keeps pace with what the server has left,
    never above it. (Read twice, before and after each answer was settled, the headroom fell
    to 10 tokens while the server had 19,976 left: every answer's unused output held back.)"""
    provider = InputOutputBucketServer(rpm=1_000, input_tpm=100_000, output_tpm=20_000,
                                       latency=0.01, output_tokens=30)
    limit = lg.RateLimit(rpm=1_000, input_tpm=100_000, output_tpm=20_000, refill="continuous")
    async with LoopbackServer(provider) as http, anthropic.AsyncAnthropic(
            base_url=http.origin, api_key="test", max_retries=0) as client:
        guarded = lg_anthropic.wrap(client, lg.Pipeline(name="claude").then(limit))
        for _ in range(4):
            await asyncio.gather(*(guarded.messages.create(
                model="claude", max_tokens=2_000, messages=MESSAGES) for _ in range(3)))
    assert sorted(reads.values()) == [1] * 12
    left = provider.quotas["output-tokens"].remaining(asyncio.get_running_loop().time())
    output = limit.backend.part_headroom(None, limit.quotas, "output")  # type: ignore[attr-defined]
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
