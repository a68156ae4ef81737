"""Provider batch APIs at half price: the same requests answered by OpenAI's Batch API.

Offline: ``BatchAPIServer`` (llmguard.testing) plays OpenAI's file and batch endpoints on
loopback, with 2% of lines failing and 1% expiring; the real openai SDK talks to it. Point
``AsyncOpenAI()`` at the real API (or ``AsyncAnthropic()`` at Anthropic) and nothing else
changes. Run it twice with the same ledger and the second run submits nothing: it downloads the
answers of the batch the first one collected. Last, a third run of new requests under a
``Budget`` at batch prices: it stops submitting once the next line could pass the cap.
"""

import asyncio
import tempfile
from pathlib import Path

from openai import AsyncOpenAI

import llmguard as lg
from llmguard import batch_api
from llmguard.testing import BatchAPIServer

requests = [{"custom_id": f"q{i}", "body": {
    "model": "gpt-4o-mini", "max_tokens": 50,
    "messages": [{"role": "user", "content": f"Name a prime number above {i * 10}."}]}}
    for i in range(200)]


async def main() -> None:
    ledger = str(Path(tempfile.mkdtemp()) / "primes.batches.jsonl")
    async with BatchAPIServer(fail_rate=0.02, expire_rate=0.01) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="offline")
        results = await batch_api.run(requests, client=client, ledger=ledger, poll=0.05)
        answered = [r for r in results if r.error is None]
        print(f"{len(answered)} of {len(results)} answered in {len(server.batches)} batches; "
              f"{sum(r.attempts > 1 for r in results)} sent twice after failing or expiring")
        print(f"{results[0].id}: {results[0].response['choices'][0]['message']['content']}")
        again = await batch_api.run(requests, client=client, ledger=ledger, poll=0.05)
        print(f"second run: {len(server.batches)} batches in all (nothing submitted again), "
              f"same answers: {[r.response for r in again] == [r.response for r in results]}")
        budget = lg.Budget(0.0002, prices={"gpt-4o-mini": (0.15, 0.60)})  # batch: half of these
        capped = await batch_api.run([{**r, "custom_id": "capped-" + r["custom_id"]}
                                      for r in requests], client=client, poll=0.05,
                                     ledger=ledger + ".capped", budget=budget)
        print(f"under a $0.0002 cap: {sum(r.error is None for r in capped)} answered, "
              f"{sum(bool(r.error and r.error['kind'] == 'not_sent') for r in capped)} not "
              f"sent; spent ${budget.statistics().spent_usd:.6f}")
        await client.close()


asyncio.run(main())
