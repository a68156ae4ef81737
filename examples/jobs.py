"""JobManager: start a batch in the background, poll its progress, cancel another job."""

import asyncio
import json

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    agent = FakeLLM(latency=0.005)
    async with lg.JobManager(ttl=600) as jobs:
        job = jobs.submit_batch(agent.send_message, [f"row {i}" for i in range(100)], concurrency=8, progress=False)
        doomed = jobs.submit(asyncio.sleep, 3600)
        while not job.is_finished:
            await asyncio.sleep(0.02)
            done, total = jobs.get(job.id).progress
            print(f"job {job.id}: {job.status.value} {done}/{total}")
        doomed.cancel()
        await doomed.wait()
        print(json.dumps(job.to_dict()["result"]), "|", [j.status.value for j in jobs.list()])


if __name__ == "__main__":
    asyncio.run(main())
