"""`llmguard run` charges a token quota the way the provider counts: the answers' usage
calibrates the prompt estimate; the provider's client is ready before the first admission."""

from __future__ import annotations

import pytest

import llmguard as lg
from llmguard._cli.limits import CALIBRATE_AFTER, Limits, TokenCount
from llmguard._cli.provider import Provider
from llmguard._core.tokens import request_tokens

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hello there " * 40}],
           "max_tokens": 50}


def _answer(prompt_tokens: int) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5}}


def test_the_prompt_part_scales_to_the_providers_count() -> None:
    """A provider counting prompts 1.5x ours: once enough answers came, the prompt part of each
    estimate is scaled by 1.5 (max_tokens stays as it is)."""
    count = TokenCount()
    prompt = request_tokens(**{**REQUEST, "max_tokens": 0})
    assert count(**REQUEST) == request_tokens(**REQUEST)  # nothing learned yet
    call = lg.Call(None, (), dict(REQUEST), "t")
    while count.estimated < CALIBRATE_AFTER:
        count.observe(call, _answer(prompt * 3 // 2))
    assert count.factor == pytest.approx(1.5, rel=0.01)
    assert count(**REQUEST) == pytest.approx(request_tokens(**REQUEST) + prompt / 2, abs=2)


def test_a_provider_counting_less_never_loosens_the_estimate() -> None:
    """Counting more than the provider only paces a little more carefully: the factor stays 1;
    answers without usage are ignored."""
    count = TokenCount()
    call = lg.Call(None, (), dict(REQUEST), "t")
    for _ in range(200):
        count.observe(call, _answer(3))
        count.observe(call, {"choices": []})
    assert count.factor == 1.0 and count(**REQUEST) == request_tokens(**REQUEST)


@pytest.mark.looptime
async def test_the_runs_rate_limit_learns_from_each_answer() -> None:
    """Under --tpm, every answer through the run's Limits layer feeds the calibration."""
    limits = Limits(rpm=None, tpm=100_000, learn=False, tokens=request_tokens)
    prompt = request_tokens(**{**REQUEST, "max_tokens": 0})

    async def provider(**kwargs: object) -> dict:
        return _answer(2 * prompt)

    handler = lg.Pipeline(limits).build()
    for _ in range(CALIBRATE_AFTER // prompt + 2):
        await handler(lg.Call(provider, (), dict(REQUEST), "t"))
    assert limits.tokens.factor == pytest.approx(2.0, rel=0.01)
    assert "factor=2.0" in repr(limits.tokens)


async def test_the_http_client_is_ready_before_the_first_call() -> None:
    """With --api-base, open() imports aiohttp and makes the session up front, so no request
    admitted by the rate limit waits for an import before it is sent."""
    provider = Provider("http://127.0.0.1:9/v1", "sk-x")
    provider.open("m")
    try:
        assert provider.other.open() is provider.other.open()  # made once, up front
    finally:
        await provider.aclose()


@pytest.mark.looptime
async def test_each_answer_is_one_reading_for_the_runs_rate_limit(monkeypatch) -> None:
    """The run's Limits layer and the RateLimit inside it both saw every answer's headers: each
    answer was read twice (4,800 readings for 2,400 answers against LiteLLM's proxy). Now the
    RateLimit reads them as they come, and the Limits layer only the one it learned from."""
    from llmguard._admission.ratelimit.backend import MemoryBackend

    readings: list[bool] = []
    observe = MemoryBackend.observe

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        readings.append(args[2])  # the unit: tokens or requests
        return observe(self, *args, **kwargs)

    monkeypatch.setattr(MemoryBackend, "observe", counted)
    limits = Limits(rpm=None, tpm=None, learn=True, tokens=request_tokens)
    answer = answered_with(limits, {"x-ratelimit-limit-requests": "60",
                                    "x-ratelimit-remaining-requests": "50",
                                    "x-ratelimit-reset-requests": "10s"})
    for _ in range(5):
        await answer()
    assert limits.inner is not None and len(readings) == 5


def answered_with(limits: Limits, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """A call through ``limits`` to a provider whose answers (``_answer(10)``) carry
    ``headers``: what makes one and awaits it."""
    async def provider(**kwargs: object) -> dict:
        return _answer(10)

    async def with_headers(call: lg.Call, call_next: object) -> object:
        result = await call_next(call)  # type: ignore[operator]
        call.response_headers = headers
        return result

    handler = lg.Pipeline(limits).then(with_headers).build()
    return lambda: handler(lg.Call(provider, (), dict(REQUEST), "t"))


async def test_limit_headers_that_are_no_number_are_not_learned() -> None:
    """A run answered with ``x-ratelimit-limit-requests: inf`` (or a limit past a float's
    range) learns no quota from it and goes on: it raised OverflowError out of the call."""
    limits = Limits(rpm=None, tpm=None, learn=True, tokens=request_tokens)
    answer = answered_with(limits, {"x-ratelimit-limit-requests": "inf",
                                    "x-ratelimit-limit-tokens": "1e400",
                                    "anthropic-ratelimit-output-tokens-limit": "-inf"})
    assert await answer() == _answer(10)
    assert limits.inner is None
