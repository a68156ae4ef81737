"""The Cache layer: expiry on loop time, eviction, single-flight, cancellation, bypass, bad input."""

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._cache.layer import cache_if_complete
from llmguard._cache.store import MISSING, MemoryStore, StoreStatistics
from llmguard.backends import CacheStore
from llmguard.testing import FakeLLM



def guarded(cache, fake):
    return lg.guard(cache)(fake.send_message)


def counts(cache):
    s = cache.statistics()
    return s.hits, s.misses, s.coalesced


async def test_hit_after_miss_and_expiry_on_virtual_time():
    """A result is served from the cache until ttl passes on the loop clock, then fetched again."""
    fake, cache = FakeLLM(), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    assert await ask("a") == await ask("a") == "echo: a"
    assert fake.call_count == 1 and counts(cache) == (1, 1, 0)
    await asyncio.sleep(59)
    await ask("a")
    assert fake.call_count == 1
    await asyncio.sleep(2)
    await ask("a")
    assert fake.call_count == 2 and cache.statistics().size == 1


async def test_lru_eviction_is_bounded_and_counted():
    """maxsize bounds the store; the least recently used entry goes first and is counted."""
    fake, cache = FakeLLM(), lg.Cache(ttl=60, maxsize=2)
    ask = guarded(cache, fake)
    await ask("a"), await ask("b"), await ask("a"), await ask("c")  # evicts b (LRU), not a
    s = cache.statistics()
    assert (s.size, s.evictions) == (2, 1)
    await ask("a")
    assert fake.call_count == 3
    await ask("b")
    assert fake.call_count == 4


async def test_notes_mark_each_outcome():
    """call.record.cache says hit, miss, coalesced or bypass, for metrics and batch outcomes."""
    seen = []

    async def spy(call, call_next):
        try:
            return await call_next(call)
        finally:
            seen.append(call.record.cache)

    fake = FakeLLM(latency=1)
    ask = lg.guard(spy, lg.Cache(ttl=60))(fake.send_message)
    await asyncio.gather(ask("x"), ask("x"))
    await ask("x")
    with lg.Cache.bypass():
        await ask("x")
    assert seen == ["miss", "coalesced", "hit", "bypass"]


async def test_single_flight_runs_once_for_concurrent_identical_calls():
    """Ten concurrent identical calls reach the provider once and all get the result."""
    fake, cache = FakeLLM(latency=1), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    results = await asyncio.gather(*(ask("q") for _ in range(10)), ask("other"))
    assert results[:10] == ["echo: q"] * 10 and fake.call_count == 2
    assert counts(cache) == (0, 2, 9) and cache.statistics().in_flight == 0


async def test_cancelled_joiners_do_not_cancel_the_shared_call():
    """Cancelling callers that joined a flight leaves the others their answer: one provider
    call, cached."""
    fake, cache = FakeLLM(latency=10), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    tasks = [asyncio.create_task(ask("q")) for _ in range(4)]
    await asyncio.sleep(5)
    tasks[1].cancel(), tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError) and done[0] == done[3] == "echo: q"
    assert fake.call_count == 1 and cache.statistics().size == 1
    assert cache.statistics().in_flight == 0


async def test_a_miss_runs_inline_and_a_joiner_takes_over_when_the_first_caller_leaves():
    """A miss runs its provider call inline, in the first caller's task (no task of its own).
    Cancelling that caller while others wait cancels its call (what the call's frames bound to
    its task, such as the provider's own ``asyncio.timeout``, cannot move to another task);
    the first caller still waiting then starts the call again, in a task of its own that the
    others share: every caller left gets the answer, and the provider's own timeout works in
    the task it runs in."""
    tasks_seen, calls = [], []

    async def provider(prompt: str) -> str:
        calls.append(prompt)
        tasks_seen.append(asyncio.current_task())
        async with asyncio.timeout(30):  # the provider's own, on the task it runs in
            await asyncio.sleep(10 if prompt == "q" else 60)
        return f"answer to {prompt}"

    cache = lg.Cache(ttl=60)
    ask = lg.guard(cache)(provider)
    first = asyncio.create_task(ask("q"))
    await asyncio.sleep(1)
    assert calls == ["q"] and tasks_seen[0] is first
    second, third = asyncio.create_task(ask("q")), asyncio.create_task(ask("q"))
    await asyncio.sleep(5)
    first.cancel()
    await asyncio.sleep(1)
    assert calls == ["q", "q"] and tasks_seen[1] not in (first, second, third)
    second.cancel()  # the task's owner leaves: the call goes on for the third caller
    assert await third == "answer to q" and calls == ["q", "q"]
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await ask("q") == "answer to q" and calls == ["q", "q"]  # stored: a hit
    assert counts(cache) == (1, 1, 2) and cache.statistics().in_flight == 0
    with pytest.raises(TimeoutError):  # the provider's timeout fires in the caller's task
        await ask("slow")


@pytest.mark.parametrize("at", [0, 5])
async def test_last_waiter_out_cancels_the_shared_call(at):
    """When every waiter is cancelled (before or during the call) the provider call is cancelled,
    nothing is cached, no flight leaks, and the next call proceeds."""
    fake, cache = FakeLLM(latency=10), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    tasks = [asyncio.create_task(ask("q")) for _ in range(3)]
    await asyncio.sleep(at)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert fake.in_flight == 0 and cache.statistics().in_flight == 0
    assert cache.statistics().size == 0
    assert await ask("q") == "echo: q"


async def test_failure_reaches_every_waiter_and_is_not_cached():
    """If the shared call fails, all waiters get the error, nothing is stored, the next call retries."""
    fake, cache = FakeLLM([RuntimeError("boom")], latency=1), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    out = await asyncio.gather(*(ask("q") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in out)
    assert cache.statistics().size == 0 and cache.statistics().in_flight == 0
    assert await ask("q") == "echo: q" and fake.call_count == 2


async def test_cache_if_default_skips_truncated_completions():
    """finish_reason == "length" (dict or object form) is returned but not cached."""

    class Choice:
        finish_reason = "length"

    class Obj:
        choices = [Choice()]

    assert not cache_if_complete({"choices": [{"finish_reason": "length"}]})
    assert not cache_if_complete(Obj())
    assert cache_if_complete({"choices": [{"finish_reason": "stop"}]}) and cache_if_complete("x")
    fake = FakeLLM([{"choices": [{"finish_reason": "length"}]}] * 2)
    ask = guarded(lg.Cache(ttl=60), fake)
    await ask("q"), await ask("q")
    assert fake.call_count == 2


async def test_a_cache_if_that_raises_leaves_no_flight_behind():
    """A ``cache_if`` that raises fails its call (a bug to see) and stores nothing; the key's
    flight is landed, so the next identical call runs instead of waiting on it forever."""
    def broken(result):
        raise ValueError("cache_if broke")

    fake, cache = FakeLLM(), lg.Cache(ttl=60, cache_if=broken)
    ask = guarded(cache, fake)
    for calls in (1, 2):
        with pytest.raises(ValueError, match="cache_if broke"):
            await ask("a")
        assert (fake.call_count, cache.statistics().in_flight) == (calls, 0)


async def test_custom_cache_if_and_key():
    """cache_if decides per result; key groups calls the user says are the same."""
    fake = FakeLLM()
    cache = lg.Cache(ttl=60, key=lambda prompt: prompt.lower(), cache_if=lambda r: "skip" not in r)
    ask = guarded(cache, fake)
    await ask("Hi"), await ask("HI"), await ask("skip"), await ask("skip")
    assert fake.call_count == 3


async def test_unhashable_custom_key_is_an_error_at_call_time():
    """A key function returning an unhashable value raises TypeError and the provider is not called."""
    fake = FakeLLM()
    ask = guarded(lg.Cache(ttl=60, key=lambda prompt: [prompt]), fake)
    with pytest.raises(TypeError, match="unhashable"):
        await ask("q")
    assert fake.call_count == 0


async def test_bypass_and_refresh():
    """bypass() neither reads nor writes; bypass(refresh=True) skips the read and stores anew."""
    fake, cache = FakeLLM(["one", "two", "three"]), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    assert await ask("q") == "one"
    with lg.Cache.bypass():
        assert await ask("q") == "two"
    assert await ask("q") == "one"
    with lg.Cache.bypass(refresh=True):
        assert await ask("q") == "three"
    assert await ask("q") == "three" and cache.statistics().bypassed == 2


async def test_invalidate_and_clear():
    """invalidate drops one call's entry (guarded or plain function), clear drops all."""
    fake, cache = FakeLLM(), lg.Cache(ttl=60)
    ask = guarded(cache, fake)
    await ask("a"), await ask("b")
    await cache.invalidate(ask, "a")
    assert cache.statistics().size == 1
    await ask("a")
    assert fake.call_count == 3
    await cache.clear()
    assert cache.statistics().size == 0


async def test_memory_store_protocol():
    """MemoryStore satisfies CacheStore: MISSING for absent/expired, per-entry ttl, delete, clear."""
    store = MemoryStore(maxsize=4)
    assert isinstance(store, CacheStore)
    assert await store.get("k") is MISSING
    await store.set("k", None, 5)
    await store.set("long", 1, 50)
    assert await store.get("k") is None
    await asyncio.sleep(6)
    assert await store.get("k") is MISSING and await store.get("long") == 1
    await store.delete("long"), await store.delete("absent")
    assert store.statistics().size == 0
    assert "MemoryStore size=0/4" in repr(store)


async def test_a_rewritten_entry_is_the_most_recently_used():
    """Storing a key again (a refresh) replaces its value and moves it to the most recently
    used end: the next entry that does not fit evicts the other one."""
    store = MemoryStore(maxsize=2)
    store.put("a", {"v": 1}, 60)
    store.put("b", {"v": 2}, 60)
    store.put("a", {"v": 3}, 60)
    store.put("c", {"v": 4}, 60)
    assert store.lookup("b") is MISSING
    assert (store.lookup("a"), store.lookup("c")) == ({"v": 3}, {"v": 4})
    assert store.statistics() == StoreStatistics(2, 2, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"ttl": 0}, ValueError, "ttl must be > 0"), ({"ttl": -5}, ValueError, "got -5"),
     ({"ttl": math.nan}, ValueError, "ttl"), ({"ttl": math.inf}, ValueError, "finite"),
     ({"ttl": "60"}, TypeError, "ttl must be a number"), ({"ttl": 1, "maxsize": 0}, ValueError,
     "maxsize"), ({"ttl": 1, "maxsize": 1.5}, ValueError, "maxsize"),
     ({"ttl": 1, "key": "model"}, TypeError, "key must be a callable"),
     ({"ttl": 1, "store": {}}, TypeError, "CacheStore")],
)
def test_bad_configuration_is_rejected_at_construction(kwargs, error, match):
    """Zero, negative, NaN, infinite or wrongly typed options raise a clear error up front."""
    with pytest.raises(error, match=match):
        lg.Cache(**kwargs)


async def test_pipeline_builder_and_repr():
    """Pipeline.cache(...) builds the layer; repr and stats show live state."""
    fake = FakeLLM()
    ask = lg.Pipeline(name="chat").cache(ttl=30).wrap(fake.send_message)
    await ask("a"), await ask("a")
    (cache,) = ask.pipeline.layers
    assert "hits=1 misses=1" in repr(cache)


class DictStore:
    """A minimal CacheStore without expiry, to exercise the async (non-memory) store path."""

    def __init__(self):
        self.data, self.ttls = {}, []

    async def get(self, key):
        await asyncio.sleep(0)
        return self.data.get(key, MISSING)

    async def set(self, key, value, ttl):
        self.ttls.append(ttl)
        self.data[key] = value

    async def delete(self, key):
        self.data.pop(key, None)

    async def clear(self):
        self.data.clear()

    def statistics(self):
        return None


async def test_custom_store_receives_string_keys_and_ttl():
    """Any CacheStore plugs in: it gets str keys, the ttl, and serves hits through async get."""
    store, fake = DictStore(), FakeLLM()
    ask = guarded(lg.Cache(ttl=42, store=store), fake)
    await ask("a"), await ask("a")
    assert fake.call_count == 1
    assert all(isinstance(k, str) and len(k) == 64 for k in store.data) and store.ttls == [42.0]


async def test_decorated_method_keeps_instances_apart_unless_they_share_a_namespace():
    """A guarded method keys on its instance too (two agents may answer differently, e.g.
    with their own system prompt); ``namespace=`` says instances share their answers."""
    calls = []

    class Bot:
        @lg.guard(lg.Cache(ttl=60))
        async def ask(self, prompt):
            calls.append(prompt)
            return prompt.upper()

        @lg.guard(lg.Cache(ttl=60, namespace="bots"))
        async def shared(self, prompt):
            calls.append(prompt)
            return prompt.upper()

    one, two = Bot(), Bot()
    assert await one.ask("hi") == await two.ask("hi") == await one.ask("hi") == "HI"
    assert calls == ["hi", "hi"]
    assert await one.shared("yo") == await two.shared("yo") == "YO"
    assert calls == ["hi", "hi", "yo"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=12))
def test_single_flight_property(plan):
    """For any mix of concurrent calls and cancellations: each surviving caller gets its own key's
    answer; a key runs once, twice if its first caller was cancelled while another survived
    (which ran it again), and no flight is left behind."""

    async def scenario():
        runs = []

        async def provider(prompt):
            runs.append(prompt)
            for _ in range(3):
                await asyncio.sleep(0)
            return prompt * 2

        cache = lg.Cache(ttl=60)
        ask = lg.guard(cache)(provider)
        tasks = [asyncio.create_task(ask(p)) for p, _ in plan]
        await asyncio.sleep(0)
        for task, (_, cancel) in zip(tasks, plan):
            if cancel:
                task.cancel()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        for (prompt, cancel), result in zip(plan, out):
            assert isinstance(result, asyncio.CancelledError) if cancel else result == prompt * 2
        survivors = {p for p, cancel in plan if not cancel}
        first_cancelled = {p: cancel for p, cancel in reversed(plan)}
        assert all(runs.count(p) == 1 + first_cancelled[p] for p in survivors)
        assert cache.statistics().in_flight == 0

    asyncio.run(scenario())


class BrokenStore(DictStore):
    """A shared store that is down: every get and set raises."""

    async def get(self, key):
        raise ConnectionError("store down")

    async def set(self, key, value, ttl):
        raise ConnectionError("store down")


async def test_store_outage_degrades_to_no_caching():
    """A store whose get/set raise does not fail calls: they run uncached and are counted."""
    fake = FakeLLM()
    cache = lg.Cache(ttl=60, store=BrokenStore())
    ask = guarded(cache, fake)
    assert await ask("a") == await ask("a") == "echo: a"
    assert fake.call_count == 2 and cache.statistics().store_errors == 4


async def test_each_caller_gets_its_own_copy_of_a_cached_answer():
    """Issue 21 #14 (decided: copy): a cache hit, and each caller coalesced on one flight, gets
    its own deep copy of a dict, list or object answer, so one caller editing it never changes
    what later callers get; immutable answers (str, numbers) are returned as they are."""
    class Reply:
        def __init__(self):
            self.choices = [{"message": {"content": "hi"}}]

    async def provider(kind: str):
        await asyncio.sleep(1)
        return {"dict": lambda: {"content": "hi", "tags": ["a"]}, "list": lambda: [1, [2]],
                "object": Reply, "str": lambda: "hi"}[kind]()

    guarded = lg.guard(lg.Cache(ttl=60))(provider)
    for kind in ("dict", "list", "object"):
        first, second = await asyncio.gather(guarded(kind), guarded(kind))  # coalesced
        third = await guarded(kind)  # a hit
        assert first is not second and second is not third
        if kind == "dict":
            first["tags"].append("edited")
            second["content"] = "edited"
            assert (await guarded(kind)) == {"content": "hi", "tags": ["a"]}
        elif kind == "list":
            first[1].append("edited")
            assert (await guarded(kind)) == [1, [2]]
        else:
            first.choices[0]["message"]["content"] = "edited"
            assert (await guarded(kind)).choices[0]["message"]["content"] == "hi"
    assert (await guarded("str")) == "hi"
