"""AgentPool: spread a batch over three agents, one call per agent at a time, one agent failing."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


class BrokenAgent:
    name = "broken"

    async def send_message(self, message: str) -> str:
        raise ConnectionError("connection reset")


async def main() -> None:
    agents = [FakeLLM(latency=0.01), FakeLLM(latency=0.02), BrokenAgent()]
    async with lg.AgentPool(agents, per_member=1, strategy="least_busy", cooldown=60) as pool:
        # The pool is an async callable: guard it like any other (retry lands on another agent).
        send = lg.Pipeline(name="pool").retry(attempts=3, backoff=0.001).wrap(pool.send_message)
        outcomes = await lg.batch(send, [f"task {i}" for i in range(30)], concurrency=3, progress=False)
        print(f"{sum(o.ok for o in outcomes)}/{len(outcomes)} ok")
        for member in pool.statistics().members:
            print(f"  {member.name:24} calls={member.calls:3} failures={member.failures} state={member.state}")


if __name__ == "__main__":
    asyncio.run(main())
