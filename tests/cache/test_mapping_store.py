"""A cachetools cache the user already has works as a Cache store (#35 item 10): entries live
in it under its eviction policy, expire ``ttl`` after they were stored on the loop's clock,
each caller gets its own copy, single-flight holds; a plain dict is refused (unbounded)."""

import asyncio

import cachetools
import pytest

import llmguard as lg
from llmguard.testing import FakeLLM


@pytest.mark.parametrize("make", [lambda: cachetools.LRUCache(maxsize=2),
                                  lambda: cachetools.TTLCache(maxsize=2, ttl=3600),
                                  lambda: cachetools.LFUCache(maxsize=2)],
                         ids=["LRUCache", "TTLCache", "LFUCache"])
async def test_a_cachetools_cache_holds_the_entries(make) -> None:
    """Hits come from the user's cache, which keeps its own bound; entries expire after the
    Cache's ttl on the loop clock (virtual here), whatever the mapping's own policy."""
    mapping, fake = make(), FakeLLM()
    cache = lg.Cache(ttl=60, store=mapping)
    ask = lg.guard(cache)(fake.send_message)
    assert await ask("a") == await ask("a") == "echo: a"
    assert fake.call_count == 1 and len(mapping) == 1
    await ask("b"), await ask("c")  # the mapping's bound: 2 entries
    assert len(mapping) == 2 and cache.statistics().size == 2
    await asyncio.sleep(61)
    await ask("c")
    assert fake.call_count == 4  # expired on the loop clock: fetched again
    assert cache.statistics().hits == 1


async def test_each_caller_gets_its_own_copy_and_one_call_per_key() -> None:
    """Ten identical concurrent calls make one provider call; editing one answer changes
    neither the stored entry nor another caller's answer."""
    fake = FakeLLM(latency=1)
    ask = lg.guard(lg.Cache(ttl=60, store=cachetools.TTLCache(100, 600)))(fake.acompletion)
    answers = await asyncio.gather(*(ask(model="m", messages=[{"role": "user", "content": "x"}])
                                     for _ in range(10)))
    assert fake.call_count == 1
    answers[0]["choices"][0]["message"]["content"] = "edited"
    assert all(a["choices"][0]["message"]["content"] == "echo: x" for a in answers[1:])
    again = await ask(model="m", messages=[{"role": "user", "content": "x"}])
    assert again["choices"][0]["message"]["content"] == "echo: x"


def test_a_plain_dict_is_refused() -> None:
    """A dict has no bound: refused, saying what to use instead."""
    with pytest.raises(TypeError, match="plain dict grows without bound"):
        lg.Cache(ttl=1, store={})
