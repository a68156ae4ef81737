"""Quickstart: guard a model call with the full stack and run a batch, offline on the fake model."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    llm = FakeLLM(latency=0.01)
    chat = (
        lg.Pipeline(name="chat")
        .cache(ttl=300)
        .fallback({"model": "fake-small"})
        .retry(attempts=4, backoff=0.05)
        .circuit_breaker()
        .timeout(5)
        .rate_limit(rpm=6000, tpm=2_000_000)
        .adaptive_concurrency(max=32)
        .wrap(llm.acompletion)
    )
    prompts = [f"question {i % 40}" for i in range(100)]  # 60 repeats: served by the cache

    async def ask(prompt: str) -> str:
        reply = await chat(model="fake", messages=[{"role": "user", "content": prompt}])
        return reply["choices"][0]["message"]["content"]

    outcomes = await lg.batch(ask, prompts, concurrency=16)
    print(outcomes[0].value)
    print(f"{sum(o.ok for o in outcomes)}/{len(outcomes)} ok, {llm.call_count} provider calls")
    for layer, stats in chat.stats().items():
        print(f"  {layer}: {stats}")


if __name__ == "__main__":
    asyncio.run(main())
