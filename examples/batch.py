"""A batch with a checkpoint: interrupted half-way, resumed without paying twice (offline)."""

import asyncio
import os
import tempfile

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    llm = FakeLLM(latency=0.001)
    send = lg.Pipeline(name="batch").retry(attempts=3, backoff=0.01).concurrency_limit(8).wrap(
        llm.send_message)
    prompts = [f"question {i}" for i in range(100)]
    checkpoint = os.path.join(tempfile.mkdtemp(), "run.jsonl")

    # First run: stop after 40 results, as a crash or Ctrl-C would.
    seen = 0
    async for _outcome in lg.batch_iter(send, prompts, concurrency=8, checkpoint=checkpoint):
        seen += 1
        if seen == 40:
            break
    first_calls = llm.call_count

    # Second run: the same command resumes; finished items are not sent again.
    outcomes = await lg.batch(send, prompts, concurrency=8, checkpoint=checkpoint)
    print(f"first run: {first_calls} calls; resumed run: {llm.call_count - first_calls} calls; "
          f"{sum(o.ok for o in outcomes)}/{len(outcomes)} ok")
    print(outcomes[0].value, "| attempts:", outcomes[-1].attempts)


if __name__ == "__main__":
    asyncio.run(main())
