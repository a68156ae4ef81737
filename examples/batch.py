"""Batch with a checkpoint: a run interrupted midway resumes without paying for finished items."""

import asyncio
import os
import tempfile

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    agent = FakeLLM(latency=0.01)
    send = lg.Pipeline(name="chat").retry(attempts=3).wrap(agent.send_message)
    prompts = [f"summarise document {i}" for i in range(200)]
    path = os.path.join(tempfile.mkdtemp(), "run.jsonl")

    # First run: stop it after ~0.05 s, as a crash or Ctrl-C would.
    first = asyncio.ensure_future(lg.batch(send, prompts, concurrency=16, checkpoint=path, progress=False))
    await asyncio.sleep(0.05)
    first.cancel()
    try:
        await first
    except asyncio.CancelledError:
        pass
    calls_before = agent.call_count
    print(f"interrupted after {calls_before} calls; checkpoint has {sum(1 for _ in open(path))} lines")

    # Second run: same checkpoint, finished prompts are restored, not called again.
    outcomes = await lg.batch(send, prompts, concurrency=16, checkpoint=path, progress=False)
    print(f"resumed: {agent.call_count - calls_before} more calls, {sum(o.ok for o in outcomes)}/{len(outcomes)} ok")
    print("first outcome:", outcomes[0].value, f"(attempts={outcomes[0].attempts})")


if __name__ == "__main__":
    asyncio.run(main())
