"""A cache hit answered at once (``AnswersNow``): the guarded function asks the Cache before it
makes a Call, when only counting layers (Metrics) sit above it and nobody reads the record.
What it counts and returns must be what the layers' ``__call__`` path gives for the same hit."""

import asyncio
import copy

import pytest

import llmguard as lg
from llmguard._core.layer import NOT_NOW, answer_now_path
from llmguard.testing import FakeLLM

RESULT = {"choices": [{"finish_reason": "stop", "message": {"content": "Paris."}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


async def answer(prompt: str, model: str = "m") -> dict:
    return copy.deepcopy(RESULT)


def test_the_path_exists_only_under_counting_layers() -> None:
    """Metrics (no tracer) above an in-memory Cache: a path; any other layer above, a tracer,
    or no Cache: none."""
    cache = lg.Cache(ttl=60)
    assert answer_now_path([lg.Metrics(), cache, lg.Retry()]) is not None
    assert answer_now_path([cache]) is not None
    assert answer_now_path([lg.Retry(), cache]) is None
    assert answer_now_path([lg.Metrics(), lg.Retry()]) is None

    class Tracer:
        def get_tracer(self, *args, **kwargs):
            return object()

    assert answer_now_path([lg.Metrics(tracer_provider=Tracer()), cache]) is None


@pytest.mark.parametrize("fast", [True, False])
async def test_a_hit_counts_the_same_on_either_path(fast: bool) -> None:
    """Metrics and Cache statistics after a miss and two hits are the same whether the hits
    were answered at once or (inside ``recording()``, which needs the records) by the layers;
    the records made there say ``cache="hit"``."""
    metrics, cache = lg.Metrics(model="m"), lg.Cache(ttl=60)
    ask = lg.guard(metrics, cache)(answer)
    await ask("q")
    if fast:
        await ask("q")
        await ask("q", model="m")  # a default passed by name: the same entry
    else:
        with lg.recording() as records:
            await ask("q")
            await ask("q", model="m")
        assert [record.cache for record in records] == ["hit", "hit"]
    stats, snapshot = metrics.statistics(), metrics.snapshot()
    assert (cache.statistics().hits, cache.statistics().misses) == (2, 1)
    assert snapshot.cache == {"hit": 2, "miss": 1, "coalesced": 0}
    assert sum(snapshot.calls.values()) == 3 and stats.in_flight == 0


async def test_a_hit_answered_at_once_is_the_callers_own_copy() -> None:
    """Editing an answer never changes what later hits get."""
    ask = lg.guard(lg.Metrics(), lg.Cache(ttl=60))(answer)
    first = await ask("q")
    first["choices"][0]["message"]["content"] = "edited"
    hit = await ask("q")
    hit["usage"]["prompt_tokens"] = 99
    assert await ask("q") == RESULT 


async def test_a_miss_after_asking_runs_once_and_a_bypass_is_not_answered() -> None:
    """A miss found by ``answer_now`` is not looked up again or counted twice; under
    ``Cache.bypass()`` nothing is answered at once."""
    fake, cache = FakeLLM(), lg.Cache(ttl=60)
    ask = lg.guard(lg.Metrics(), cache)(fake.send_message)
    assert cache.answer_now(fake.send_message, ("a",), {}) is NOT_NOW
    await ask("a")
    await ask("a")
    with lg.Cache.bypass():
        assert cache.answer_now(fake.send_message, ("a",), {}) is NOT_NOW
        await ask("a")
    s = cache.statistics()
    assert (s.hits, s.misses, s.bypassed, fake.call_count) == (1, 1, 1, 2)


async def test_a_key_that_cannot_be_built_fails_through_the_layers() -> None:
    """A custom key that raises is not raised by the at-once path: the call goes through the
    layers, so Metrics counts it as an error, as without that path."""
    def key(*args, **kwargs):
        raise TypeError("no key for this call")

    metrics = lg.Metrics()
    ask = lg.guard(metrics, lg.Cache(ttl=60, key=key))(answer)
    with pytest.raises(TypeError, match="no key"):
        await ask("q")
    assert metrics.statistics().failures == 1


async def test_a_miss_is_timed_from_the_guarded_functions_read_an_inner_metrics_from_its_own(
) -> None:
    """A miss asked of the Cache first hands the outer Metrics the clock read taken as the call
    started (``Call.started``), once: a Metrics below a Retry times its second attempt from its
    own start, not from the call's (which would add the first attempt and the backoff)."""
    outer, inner = lg.Metrics(model="m"), lg.Metrics(model="m")
    sent = 0

    async def flaky(prompt: str) -> dict:
        nonlocal sent
        sent += 1
        await asyncio.sleep(1)
        if sent == 1:
            raise ConnectionError("reset")
        return copy.deepcopy(RESULT)

    ask = lg.guard(outer, lg.Cache(ttl=60), lg.Retry(attempts=2, backoff=4, seed=1), inner)(flaky)
    await ask("q")
    assert inner.statistics().latency_max == pytest.approx(1.0, abs=0.01)
    assert outer.statistics().latency_max >= 2.0  # both attempts and the backoff between
