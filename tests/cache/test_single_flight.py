"""Single-flight with an inline first caller: the take-over when it leaves, at every await point,
passed on by a joiner that leaves too, errors, ttl, a shared store, a closed coroutine."""

import asyncio

import pytest

from cancel_points import CancelAt

import llmguard as lg
from llmguard._cache.store import MISSING
from llmguard.testing import FakeLLM

ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def counts(cache):
    s = cache.statistics()
    return s.hits, s.misses, s.coalesced


async def test_cancelling_the_first_caller_at_every_await_point_leaves_the_joiners_their_answer():
    """The first caller of a key, running the call inline through Retry, Timeout and a
    ConcurrencyLimit, is cancelled at each of its await points while two callers wait: both get
    the answer (the first of them started the call again), the answer is stored, no flight or
    permit is left behind, and the next call is a hit."""
    n = 0
    while True:
        calls = []

        async def provider(prompt: str) -> str:
            calls.append(prompt)
            for _ in range(3):
                await asyncio.sleep(1)
            return f"answer to {prompt}"

        cache, limit = lg.Cache(ttl=60), lg.ConcurrencyLimit(1)
        ask = lg.guard(cache, lg.Retry(attempts=2), lg.Timeout(30), limit)(provider)
        point = CancelAt(ask("q"), n)
        first = asyncio.create_task(_awaiting(point))
        joiners = [asyncio.create_task(ask("q")) for _ in range(2)]
        done = await asyncio.gather(first, *joiners, return_exceptions=True)
        if not point.reached:
            assert done == ["answer to q"] * 3 and calls == ["q"]
            break
        assert isinstance(done[0], asyncio.CancelledError), (n, done)
        assert done[1:] == ["answer to q"] * 2 and calls == ["q", "q"], n
        assert counts(cache) == (0, 1, 2) and cache.statistics().in_flight == 0
        assert limit.statistics().in_flight == 0
        assert await ask("q") == "answer to q" and counts(cache) == (1, 1, 2)
        n += 1
    assert n >= 3  # the provider's three sleeps at least


async def _awaiting(point: CancelAt):
    return await point


async def test_a_joiner_told_to_take_over_that_leaves_passes_it_on():
    """The first caller and the joiner next in line are cancelled in the same loop turn: the
    joiner after them starts the call; when every caller leaves, nothing runs on, nothing is
    stored, and the next call starts afresh."""
    fake, cache = FakeLLM(latency=10), lg.Cache(ttl=60)
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(1)
    tasks[0].cancel(), tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(d) for d in done[:2]] == [asyncio.CancelledError] * 2 and done[2] == "echo: q"
    assert fake.call_count == 2 and cache.statistics().size == 1

    fake, cache = FakeLLM(latency=10), lg.Cache(ttl=60)
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert fake.call_count == 1 and fake.in_flight == 0
    assert cache.statistics().in_flight == 0 and cache.statistics().size == 0
    assert await ask("q") == "echo: q" and fake.call_count == 2


async def test_every_caller_leaving_a_take_over_cancels_its_task():
    """After a take-over, the task runs while anyone waits; the last one out cancels it."""
    fake, cache = FakeLLM(latency=10), lg.Cache(ttl=60)
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(1)
    tasks[0].cancel()
    await asyncio.sleep(1)
    assert fake.call_count == 2 and fake.in_flight == 1
    tasks[1].cancel(), tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert fake.in_flight == 0 and cache.statistics().in_flight == 0
    assert cache.statistics().size == 0


async def test_the_heir_of_a_take_over_accounts_for_the_provider_call():
    """The owner of a take-over (the joiner whose call the task runs) leaves too: the next
    caller waiting inherits the call, its record carries the usage; the owner's does not
    count it twice (Metrics counts the tokens once)."""
    fake = FakeLLM(latency=10)
    metrics = lg.Metrics(name="chat")
    chat = lg.guard(metrics, lg.Cache(ttl=60))(fake.acompletion)
    with lg.recording() as records:
        tasks = [asyncio.create_task(chat(**ASK)) for _ in range(3)]
        await asyncio.sleep(1)
        tasks[0].cancel()
        await asyncio.sleep(1)
        tasks[1].cancel()
        answer = await tasks[2]
    await asyncio.gather(*tasks[:2], return_exceptions=True)
    assert fake.call_count == 2
    assert [(r.cache, r.inherited) for r in records] == [
        ("miss", False), ("coalesced", True), ("coalesced", True)]
    assert records[2].usage.input_tokens == answer["usage"]["prompt_tokens"]
    assert metrics.statistics().input_tokens == answer["usage"]["prompt_tokens"]


async def test_an_error_of_a_take_over_reaches_every_caller_and_is_not_cached():
    """The call started again by a take-over fails: its owner and every joiner get the error,
    nothing is stored, the next call runs."""
    fake, cache = FakeLLM(["never sent back", RuntimeError("boom")], latency=5), lg.Cache(ttl=60)
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(1)
    tasks[0].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert [type(d) for d in done[1:]] == [RuntimeError] * 2 and done[1] is done[2]
    assert cache.statistics().size == 0 and cache.statistics().in_flight == 0
    assert await ask("q") == "echo: q" and fake.call_count == 3


async def test_answers_expire_after_ttl_whoever_ran_the_call():
    """An answer stored by the inline first caller, or by a take-over, is a hit for ttl seconds
    of loop time, then fetched again."""
    fake, cache = FakeLLM(latency=1), lg.Cache(ttl=30)
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask(p)) for p in ("a", "b", "b")]
    await asyncio.sleep(0.5)
    tasks[1].cancel()  # "b" is then run again by the caller waiting on it
    await asyncio.gather(*tasks, return_exceptions=True)
    assert fake.call_count == 3
    await asyncio.sleep(28)  # both stored about 1 s and 1.5 s in: still fresh
    assert await ask("a") == "echo: a" and await ask("b") == "echo: b"
    assert fake.call_count == 3
    await asyncio.sleep(2)
    assert await ask("a") == "echo: a" and await ask("b") == "echo: b"
    assert fake.call_count == 5


class SlowStore:
    """A shared (async) store whose ``set`` takes a while."""

    def __init__(self):
        self.data = {}

    async def get(self, key):
        return self.data.get(key, MISSING)

    async def set(self, key, value, ttl):
        await asyncio.sleep(5)
        self.data[key] = value

    async def delete(self, key):
        self.data.pop(key, None)

    async def clear(self):
        self.data.clear()

    def statistics(self):
        return None


async def test_a_first_caller_cancelled_while_a_shared_store_writes_still_answers_the_joiners():
    """The answer is back and being written to a shared store when the first caller is
    cancelled: the joiners get it (no second call), and no flight is left behind."""
    fake, cache = FakeLLM(latency=1), lg.Cache(ttl=60, store=SlowStore())
    ask = lg.guard(cache)(fake.send_message)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(3)
    tasks[0].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError) and done[1:] == ["echo: q"] * 2
    assert fake.call_count == 1 and cache.statistics().in_flight == 0


async def test_a_first_caller_whose_coroutine_is_closed_hands_the_flight_over():
    """A first caller's coroutine closed mid-call (GeneratorExit, not a cancellation) hands the
    flight over like a cancellation: the joiner still gets the answer."""
    fake, cache = FakeLLM(latency=5), lg.Cache(ttl=60)
    ask = lg.guard(cache)(fake.send_message)
    first = ask("q")
    first.send(None)  # runs the first caller's call inline to its first wait
    joiner = asyncio.create_task(ask("q"))
    await asyncio.sleep(1)
    first.close()
    assert await joiner == "echo: q" and fake.call_count == 2
    assert cache.statistics().in_flight == 0


class SharedStore(SlowStore):
    """A shared store that answers at once and records the keys whose fill was given up."""

    def __init__(self):
        super().__init__()
        self.abandoned = []

    async def set(self, key, value, ttl):
        self.data[key] = value

    def abandon(self, key):
        self.abandoned.append(key)


@pytest.mark.parametrize("store", [None, "shared"])
async def test_a_cache_if_that_raises_fails_every_joiner_and_leaves_nothing_behind(store):
    """The first caller's answer meets a ``cache_if`` that raises while others wait on it: each
    of them gets that error (none waits forever), nothing is stored, a shared store's fill is
    given up (its lock released for other processes), and the next call runs afresh."""
    def broken(result):
        raise ValueError("cache_if broke")

    shared = SharedStore() if store else None
    fake = FakeLLM(latency=1.0)
    cache = lg.Cache(ttl=60, cache_if=broken, store=shared)
    ask = lg.guard(cache)(fake)
    outcomes = await asyncio.gather(*(ask("q") for _ in range(3)), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["cache_if broke"] * 3
    assert (fake.call_count, cache.statistics().in_flight) == (1, 0)
    if shared:
        assert shared.data == {} and len(shared.abandoned) == 1
    with pytest.raises(ValueError, match="cache_if broke"):
        await ask("q")
    assert fake.call_count == 2
