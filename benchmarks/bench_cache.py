"""Cache: hit path vs a bare cachetools lookup, miss overhead, and single-flight on a duplicate batch.

Run: python benchmarks/bench_cache.py  (medians over repeats, ratios measured side by side)
"""

import asyncio
import json
import random
import statistics
import time

import cachetools

import llmguard as lg
from llmguard.testing import FakeLLM

N, REPEATS = 20_000, 7
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is Python?"}]


async def provider(**kwargs):
    return "answer"


def per_call(fn, n=N):
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def bare(key_fn):
    store = cachetools.TTLCache(10_000, 300)

    async def call(**kwargs):
        key = key_fn(kwargs)
        value = store.get(key)
        if value is None:
            value = store[key] = await provider(**kwargs)
        return value

    return call


async def run_many(call, n, **kwargs):
    for _ in range(n):
        await call(**kwargs)


class HandDict:
    """The seed's CachedAgent pattern: a dict checked before the call, filled after it."""

    def __init__(self, agent):
        self.agent, self.cache = agent, {}

    async def query(self, message):
        if message in self.cache:
            return self.cache[message]
        response = await self.agent.send_message(message)
        self.cache[message] = response
        return response


async def duplicate_batch():
    random.seed(1)
    distinct = [f"prompt {i}" for i in range(700)]
    prompts = distinct + random.choices(distinct, k=300)  # 30% duplicates
    random.shuffle(prompts)
    rows = []
    hand_fake = FakeLLM(latency=0.05)
    hand = HandDict(hand_fake)
    await asyncio.gather(*(hand.query(p) for p in prompts))
    rows.append(("hand-written dict (seed CachedAgent)", hand_fake.call_count))
    fake = FakeLLM(latency=0.05)
    ask = lg.guard(lg.Cache(ttl=300))(fake.send_message)
    await asyncio.gather(*(ask(p) for p in prompts))
    rows.append(("lg.Cache (single-flight)", fake.call_count))
    return len(prompts), len(set(prompts)), rows


def main():
    loop = asyncio.new_event_loop()
    kw = {"model": "gpt-4o-mini", "messages": MSGS, "temperature": 0}
    json_key = lambda kw: json.dumps(kw, sort_keys=True)  # what a careful user writes  # noqa: E731
    cases = {
        "bare cachetools, json.dumps key": bare(json_key),
        "lg.Cache, default sha256 key": lg.guard(lg.Cache(ttl=300))(provider),
        "bare cachetools, key=model+prompt": bare(lambda kw: (kw["model"], kw["messages"][-1]["content"])),
        "lg.Cache, key=model+prompt": lg.guard(lg.Cache(
            ttl=300, key=lambda **kw: f'{kw["model"]}|{kw["messages"][-1]["content"]}'))(provider),
    }
    hit = {name: per_call(lambda n, c=c: loop.run_until_complete(run_many(c, n, **kw)))
           for name, c in cases.items()}
    print(f"{'hit path (per call)':42} {'µs':>8} {'ratio':>7}")
    names = list(hit)
    for base, ours in ((names[0], names[1]), (names[2], names[3])):
        print(f"{base:42} {hit[base]:8.2f} {1:7.2f}")
        print(f"{ours:42} {hit[ours]:8.2f} {hit[ours] / hit[base]:7.2f}")

    def misses(n, cache_factory):
        call = cache_factory()
        loop.run_until_complete(run_many_distinct(call, n))

    async def run_many_distinct(call, n):
        for i in range(n):
            await call(model="m", messages=[{"role": "user", "content": str(i)}])

    n = 5_000
    plain = per_call(lambda k: misses(k, lambda: provider), n)
    cached = per_call(lambda k: misses(k, lambda: lg.guard(lg.Cache(ttl=300, maxsize=n))(provider)), n)
    print(f"\n{'miss path (per call)':42} {'µs':>8}")
    print(f"{'no cache':42} {plain:8.2f}")
    print(f"{'lg.Cache miss (key + flight + store)':42} {cached:8.2f}  (+{cached - plain:.2f} µs)")

    total, distinct, rows = loop.run_until_complete(duplicate_batch())
    print(f"\nconcurrent batch: {total} prompts, {distinct} distinct (30% duplicates)")
    print(f"{'':42} {'provider calls':>14}")
    for name, calls in rows:
        print(f"{name:42} {calls:14}")
    loop.close()


if __name__ == "__main__":
    main()
