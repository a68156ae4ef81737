"""Quickstart: guard an agent's send_message and run a small batch, offline on the fake model."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    agent = FakeLLM(latency=0.01)
    pipeline = lg.Pipeline(name="chat")
    send_message = pipeline.wrap(agent.send_message)
    replies = await asyncio.gather(*(send_message(f"question {i}") for i in range(10)))
    for reply in replies[:3]:
        print(reply)
    print(f"{len(replies)} replies; stats: {send_message.stats()}")


if __name__ == "__main__":
    asyncio.run(main())
