"""Rate-limit headers whose numbers are not finite (``inf``, one past a float's range, ``nan``)
are read as absent: a remaining count or limit of "inf" raised OverflowError out of the call in
place of its answer, and a reset of "inf" paused the key for ever."""

import asyncio

import pytest

import llmguard as lg

READINGS = [
    {"x-ratelimit-remaining-requests": "inf", "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-remaining-tokens": "1e400", "x-ratelimit-reset-tokens": "1s"},
    {"x-ratelimit-remaining-tokens": "-inf", "x-ratelimit-reset-tokens": "1s"},
    {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s",
     "x-ratelimit-limit-requests": "inf"},
    {"anthropic-ratelimit-tokens-remaining": "Infinity",
     "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z"},
    {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "inf"},
    {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1e400"},
]


class Answering:
    """A transport stand-in below the layer: every answer carries ``headers``."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    async def __call__(self, call: lg.Call, call_next: lg.Handler):
        result = await call_next(call)
        call.response_headers = self.headers
        return result


async def two_calls(headers: dict[str, str]) -> float:
    """Two calls answered with ``headers``, through a fresh RateLimit: the seconds they took
    beyond its quotas' minute (with its margin)."""
    async def echo(text: str) -> str:
        return text

    layer = lg.RateLimit(rpm=100, tpm=10_000, tokens=lambda *args, **kwargs: 10, max_wait=3600)
    guarded = lg.guard(layer, Answering(headers))(echo)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert [await guarded("a"), await guarded("b")] == ["a", "b"]
    return loop.time() - start - 60 - layer.statistics().margin


@pytest.mark.parametrize("headers", READINGS)
async def test_a_reading_that_is_no_number_is_not_read(headers) -> None:
    """Each answer is returned (not an OverflowError), and the second call goes within the
    quotas' minute (not after a pause for ever: AdmissionTimeout)."""
    assert await two_calls(headers) <= 0
