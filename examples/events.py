"""What happened to each call (``lg.recording()``) and events as they happen (``lg.subscribe``).

The README's "What happened to a call" section, runnable offline on the fake model.
"""

import asyncio
import llmguard as lg
from llmguard.testing import FakeLLM, RateLimited

# Two 429s, then answers: a provider telling us to slow down.
llm = FakeLLM([RateLimited("slow down", status_code=429, headers={"retry-after": "0.1"})] * 2)
chat = lg.Pipeline(name="chat").cache(ttl=60).retry(attempts=5, backoff=0.01).wrap(llm.send_message)

def on_retry(event: lg.Event) -> None:
    print(f"{event.pipeline}: attempt {event.attempt} failed ({event.error}); "
          f"retrying in {event.delay:.2f} s")

async def main() -> None:
    with lg.subscribe(on_retry, lg.EventKind.RETRY_SCHEDULED), lg.recording() as calls:
        await chat("hello")
        await chat("hello")  # answered by the cache
    for record in calls:
        print(record.cache, record.sent, "sent,", record.retries, "retries")

asyncio.run(main())
