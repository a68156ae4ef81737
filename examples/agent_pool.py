"""Several agents behind one pool, background jobs with progress (offline, fake agents)."""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    agents = [FakeLLM(latency=0.01, reply_prefix=f"agent{i}: ") for i in range(3)]
    async with lg.AgentPool(agents, per_member=2) as pool:
        send = lg.Pipeline(name="pool").retry(attempts=3).wrap(pool.send_message)
        replies = await asyncio.gather(*(send(f"task {i}") for i in range(12)))
        print(replies[:3])
        print({m.name: m.calls for m in pool.statistics().members})

        async with lg.JobManager() as jobs:
            job = jobs.submit_batch(send, [f"item {i}" for i in range(30)], concurrency=6)
            while not job.finished:
                await asyncio.sleep(0.02)
                print("progress:", job.to_dict()["progress"])
            outcomes = await job.wait()
            print(job.status.value, sum(o.ok for o in outcomes), "ok")


if __name__ == "__main__":
    asyncio.run(main())
