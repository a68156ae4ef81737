"""Cache above Fallback, the README's order: a degraded answer (an alternate model's, the
default) answers the call but is never stored under the primary's key; what answered is on the
record; a waiter that inherits a flight whose first caller was cancelled accounts for the paid
call (issue #35 items 6 and 7)."""

import asyncio

import pytest

import llmguard as lg
from llmguard.testing import FakeLLM, make_error


class Outage:
    """An OpenAI-style provider whose ``primary`` model fails while ``down`` (a 503), every
    other model answering; counts what each model was sent."""

    def __init__(self, latency: float = 1.0) -> None:
        self.down = True
        self.fake = FakeLLM(latency=latency)
        self.sent: dict[str, int] = {}

    async def acompletion(self, *, model: str, messages: list, **kwargs):
        self.sent[model] = self.sent.get(model, 0) + 1
        if self.down and model == "primary":
            await asyncio.sleep(0.1)
            raise make_error(lg.FailureKind.SERVER_ERROR)
        answer = await self.fake.acompletion(model=model, messages=messages, **kwargs)
        return {**answer, "model": model}


def readme_stack(provider: Outage, fallback: lg.Fallback, cache: lg.Cache) -> lg.Guarded:
    """The README's order with default settings: Metrics, Cache, Fallback, Retry, RateLimit."""
    return (lg.Pipeline(name="chat").metrics().then(cache).then(fallback)
            .retry(attempts=2, max_delay=1).rate_limit(rpm=600).wrap(provider.acompletion))


ASK = {"model": "primary", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_default_answer_is_never_cached() -> None:
    """Fallback(default=...) under a Cache: the degraded answer is returned while the provider is
    down, but once it recovers the next call gets the provider's answer (fails before: the
    default was served for the whole ttl)."""
    provider, cache = Outage(), lg.Cache(ttl=3600)
    chat = readme_stack(provider, lg.Fallback(default="Busy, try again later."), cache)
    with lg.recording() as calls:
        assert await chat(**ASK) == "Busy, try again later."
        provider.down = False
        answer = await chat(**ASK)
    assert answer["choices"][0]["message"]["content"] == "echo: hi"
    assert [(r.fallback, r.cache) for r in calls] == [("default", "miss"), (None, "miss")]
    assert await chat(**ASK) == answer  # the provider's answer is cached
    assert cache.statistics().hits == 1


async def test_an_alternate_models_answer_is_not_served_for_the_primary() -> None:
    """An alternate model's answer is not stored under the primary's key: after the primary
    recovers, the same call reaches the primary; each caller sharing the degraded flight is
    told which model answered (record.models, record.fallback)."""
    provider, cache = Outage(), lg.Cache(ttl=3600)
    chat = readme_stack(provider, lg.Fallback({"model": "backup"}), cache)
    with lg.recording() as calls:
        first = await asyncio.gather(*(chat(**ASK) for _ in range(3)))
    assert {a["model"] for a in first} == {"backup"}
    assert [(r.cache, r.fallback, r.models[-1]) for r in calls] == [
        ("miss", "model=backup", "backup"), ("coalesced", "model=backup", "backup"),
        ("coalesced", "model=backup", "backup")]
    assert sum(r.sent for r in calls) == sum(provider.sent.values())  # sent counted once
    provider.down = False
    with lg.recording() as calls:
        again = await chat(**ASK)
    assert again["model"] == "primary" and calls[0].cache == "miss"
    assert calls[0].fallback is None and calls[0].models == ("primary",)
    with lg.recording() as calls:
        assert (await chat(**ASK))["model"] == "primary"
    assert calls[0].cache == "hit"


@pytest.mark.parametrize("kind", ["coroutine function", "callable returning an awaitable"])
async def test_an_async_default_is_awaited(kind: str) -> None:
    """Fallback(default=async_fn) returns the function's answer, not an un-awaited coroutine;
    a plain callable returning an awaitable is awaited too; the default gets the arguments."""

    async def busy(**request) -> str:
        await asyncio.sleep(0.5)
        return f"busy ({request['model']})"

    default = busy if kind == "coroutine function" else (lambda **request: busy(**request))
    provider = Outage()
    chat = readme_stack(provider, lg.Fallback(default=default), lg.Cache(ttl=60))
    assert await chat(**ASK) == "busy (primary)"


async def test_a_sync_default_callable_still_works() -> None:
    """A plain function default is called with the arguments and its answer returned as is."""
    provider = Outage()
    chat = readme_stack(provider, lg.Fallback(default=lambda **request: request["model"]),
                        lg.Cache(ttl=60))
    assert await chat(**ASK) == "primary"


async def test_paid_tokens_are_counted_when_the_first_caller_is_cancelled() -> None:
    """Metrics above a Cache: the first caller of a key is cancelled while a second waits on the
    same provider call; the second starts it again (the first caller's call was cancelled with
    it) and the answer's tokens are counted once, on the waiter that inherited the flight
    (fails before: 0 tokens for a paid call)."""
    fake = FakeLLM(latency=5.0)
    metrics = lg.Metrics(name="chat")
    chat = (lg.Pipeline(name="chat").then(metrics).cache(ttl=60).retry(attempts=2)
            .rate_limit(rpm=600).wrap(fake.acompletion))
    with lg.recording() as calls:
        first = asyncio.create_task(chat(**ASK))
        await asyncio.sleep(1)
        second = asyncio.create_task(chat(**ASK))
        await asyncio.sleep(1)
        first.cancel()
        answer = await second
    with pytest.raises(asyncio.CancelledError):
        await first
    usage = answer["usage"]
    stats = metrics.statistics()
    assert fake.call_count == 2
    assert (stats.input_tokens, stats.output_tokens) == (usage["prompt_tokens"],
                                                         usage["completion_tokens"])
    assert [(r.cache, r.inherited, r.billable) for r in calls] == [
        ("miss", False, True), ("coalesced", True, True)]
    assert calls[1].usage.input_tokens == usage["prompt_tokens"]
    # the next identical call is a hit: no tokens of its own
    await chat(**ASK)
    assert metrics.statistics().input_tokens == usage["prompt_tokens"]
