"""An ``aiolimiter.AsyncLimiter`` the user already holds works as a layer (#35 item 10): passed
as it is to ``guard``/``Pipeline``, its rate holds (its leaky bucket, exactly), a cancelled
waiter takes nothing, and the wait is on the call's record."""

import asyncio

import pytest
from aiolimiter import AsyncLimiter

import llmguard as lg
from llmguard.testing import FakeLLM


class Clocked:
    """A provider that notes the loop time of every arrival."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def __call__(self, prompt: str) -> str:
        self.arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.1)
        return f"ok {prompt}"


async def test_its_rate_holds_inside_the_readme_stack() -> None:
    """AsyncLimiter(10, 60) in the recommended order (Metrics, Cache, Retry, the limiter, a
    ConcurrencyLimit): 40 distinct calls at once; 10 go at once (its burst), then one every 6 s
    as the bucket leaks: never faster, so 40 calls take at least 180 s."""
    limiter = AsyncLimiter(10, 60)
    provider = Clocked()
    chat = (lg.Pipeline(name="aio").metrics().cache(ttl=300).retry(attempts=3)
            .then(limiter).concurrency_limit(8).wrap(provider))
    start = asyncio.get_running_loop().time()
    with lg.recording() as calls:
        answers = await asyncio.gather(*(chat(f"q{i}") for i in range(40)))
    assert sorted(answers) == sorted(f"ok q{i}" for i in range(40))
    times = sorted(t - start for t in provider.arrivals)
    assert len(times) == 40
    for i, t in enumerate(times[10:], start=1):
        assert t >= i * 6 - 1e-6, (i, t)
    assert times[-1] < 30 * 6 + 5  # and no slower than the bucket allows (plus latency)
    waited = [r for r in calls if r.delayed_by == "aiolimiter"]
    assert len(waited) == 30 and all(r.wait > 0 for r in waited)
    stats = chat.stats()["aiolimiter"]
    assert (stats.admitted, stats.waiting, stats.max_rate, stats.time_period) == (40, 0, 10, 60)


async def test_a_cancelled_waiter_takes_nothing_and_the_next_call_goes() -> None:
    """A caller cancelled while waiting for the limiter leaves its level as it was: the call
    after it is admitted exactly when the bucket has room for one more, not later."""
    limiter = AsyncLimiter(1, 10)
    fake = FakeLLM()
    ask = lg.guard(limiter)(fake.send_message)
    await ask("first")  # the bucket is full for 10 s
    victim = asyncio.create_task(ask("victim"))
    await asyncio.sleep(5)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert ask.stats()["aiolimiter"].waiting == 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await ask("after") == "echo: after"
    assert 4.9 <= loop.time() - start <= 5.1  # 10 s after the first call, as if none waited
    assert [args[0] for args, _ in fake.calls] == ["first", "after"]


def test_it_is_a_layer_wherever_a_layer_goes() -> None:
    """guard(), Pipeline(...) and .then() take the limiter; import llmguard does not need
    aiolimiter (the adapter is loaded when a limiter is given)."""
    limiter = AsyncLimiter(5, 1)
    for pipeline in (lg.guard(limiter), lg.Pipeline(limiter), lg.Pipeline().then(limiter)):
        (layer,) = pipeline.layers
        assert layer.limiter is limiter and "5 per 1 s" in repr(layer)
