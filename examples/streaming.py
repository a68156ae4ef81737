"""Streaming through a pipeline: the concurrency slot is held until the stream ends (offline)."""

import asyncio

import llmguard as lg


async def stream_answer(prompt: str):
    """A fake streaming model: yields the answer word by word."""
    for word in f"Here is an answer to {prompt!r}".split():
        await asyncio.sleep(0.005)
        yield word + " "


async def main() -> None:
    limit = lg.ConcurrencyLimit(2)
    chat = lg.guard(lg.Retry(attempts=3), limit)(stream_answer)
    async for chunk in chat("streams"):
        print(chunk, end="", flush=True)
        assert limit.statistics().in_flight == 1  # held while the consumer reads
    print()
    print("in flight after the stream:", limit.statistics().in_flight)


if __name__ == "__main__":
    asyncio.run(main())
