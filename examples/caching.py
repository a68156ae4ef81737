"""Caching LLM calls: correct keys, TTL, and single-flight for concurrent duplicates (offline)."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    fake = FakeLLM(latency=0.05)
    cache = lg.Cache(ttl=300, maxsize=1_000)
    chat = lg.guard(cache)(fake.acompletion)
    messages = [{"role": "user", "content": "What is Python?"}]

    # Ten identical concurrent calls: one provider call, ten answers.
    await asyncio.gather(*(chat(model="m", messages=messages, temperature=0) for _ in range(10)))
    # A different temperature is a different answer, so a different key.
    await chat(model="m", messages=messages, temperature=0.9)
    # Same request, keys given in another order, another timeout: a hit.
    await chat(temperature=0, messages=messages, model="m", timeout=5)
    print(f"provider calls: {fake.call_count}")  # 2
    print(cache.statistics())

    with lg.Cache.bypass(refresh=True):  # skip the lookup, store the fresh answer
        await chat(model="m", messages=messages, temperature=0)
    await cache.invalidate(chat, model="m", messages=messages, temperature=0.9)
    print(f"after refresh + invalidate: {cache!r}")


if __name__ == "__main__":
    asyncio.run(main())
