"""Share one rate limit, one concurrency limit and one cache between processes through Redis.

Run two copies at once and they split one quota. Needs a Redis at REDIS_URL (default
redis://127.0.0.1:6379/0); without one it says so and exits 0.
"""

import asyncio
import os
import uuid

import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, RedisStore
from llmguard.testing import FakeLLM

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def main() -> None:
    # A fresh prefix so repeated runs start from an empty quota; use a fixed one in production.
    prefix = f"llmguard-example-{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(URL, prefix=prefix, on_error="fail", timeout=0.5)
    try:
        await backend.connection.redis.ping()
    except Exception as exc:
        print(f"No Redis answers at {URL} ({type(exc).__name__}); start redis-server or set "
              "REDIS_URL to run this example.")
        return
    llm = FakeLLM(latency=0.01)
    store = RedisStore(backend, namespace="chat")
    chat = (
        lg.Pipeline(name="chat")
        .cache(ttl=60, store=store)
        .rate_limit(rps=50, tpm=100_000, backend=backend)  # shared by every process
        .concurrency_limit(RedisConcurrencyLimiter(backend, 8, name="chat", lease=5))
        .wrap(llm.acompletion)
    )
    prompts = [f"question {i % 25}" for i in range(50)]  # 25 distinct: half are cache hits
    await asyncio.gather(*(
        chat(model="gpt-4o-mini", messages=[{"role": "user", "content": p}], max_tokens=50)
        for p in prompts
    ))
    print(f"{len(prompts)} calls, {llm.call_count} reached the provider, cache: {store!r}")
    print(f"backend: {backend!r}")
    await store.clear()
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
