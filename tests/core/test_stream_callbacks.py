"""A callback run as a stream ends that raises (a user's ``RateLimit(usage=...)`` given the
final chunk) leaves every other layer's end to run: ``Stream._finish`` ran them in order and
stopped at the first that raised, so an outer ConcurrencyLimit never released its permit (the
next call waited for ever) and Metrics never counted the call."""

import pytest

import llmguard as lg


async def answer(prompt: str):
    """A streamed answer whose last chunk reports its usage, as OpenAI's does."""
    yield {"text": prompt}
    yield {"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def broken_usage(chunk):
    raise KeyError("the user's usage callback expected another shape")


async def test_a_raising_end_callback_leaves_the_others_to_run() -> None:
    """The stream's end raises the callback's error to its reader, once every layer's end ran:
    the permit is back, and a second call gets it; Metrics saw both calls end."""
    metrics, concurrency = lg.Metrics(), lg.ConcurrencyLimit(1, max_wait=60)
    layer = lg.RateLimit(rpm=100, tpm=10_000, tokens=lambda *args, **kwargs: 10,
                         usage=broken_usage)
    guarded = lg.guard(metrics, concurrency, layer)(answer)
    for prompt in ("a", "b"):
        with pytest.raises(KeyError):
            async for _ in guarded(prompt):
                pass
    assert concurrency.statistics().in_flight == 0
    assert (metrics.statistics().calls, metrics.statistics().in_flight) == (2, 0)
