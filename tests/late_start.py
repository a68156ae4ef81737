"""The README stack started late in a clock minute with demand above the quota, only the
quotas given: the harness of the silent-server tests in tests/admission (virtual time)."""

import asyncio
import random
from typing import Any

import llmguard as lg
from llmguard.testing import virtual_wall_clock


def ask(i: int) -> dict[str, Any]:
    return {"model": "primary", "max_tokens": 200,
            "messages": [{"role": "user", "content": f"question number {i}"}]}


async def run(server: Any, phase: float, calls: int, seed: int = 0,
              jitter: float | None = 0.01, tpm: int = 10_000) -> tuple[Any, float, float]:
    """``calls`` at once ``phase`` s into the minute through the README stack (RateLimit
    with only ``rpm=60`` and ``tpm``), each 0 to ``jitter`` s on the way (drawn from ``seed``;
    None: sent at once), every call done (a failed one raises here): the RateLimit layer, the
    wall time and the server's ideal."""
    with virtual_wall_clock():
        loop = asyncio.get_running_loop()
        await asyncio.sleep((phase - loop.time() % 60) % 60)
        pipeline = (lg.Pipeline(name="late").metrics().cache(ttl=300)
                    .fallback({"model": "backup"}).retry(attempts=4, seed=seed)
                    .circuit_breaker().timeout(30).rate_limit(rpm=60, tpm=tpm)
                    .concurrency_limit(32))
        layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
        server.on_headers.append(layer.observe_headers)
        rng = random.Random(seed)

        async def jittered(**kwargs: Any) -> Any:
            if jitter is not None:
                await asyncio.sleep(rng.uniform(0, jitter))
            return await server.acompletion(**kwargs)

        send = pipeline.wrap(jittered)
        start = loop.time()
        results = await asyncio.gather(*(send(**ask(i)) for i in range(calls)))
        wall = loop.time() - start
    assert len(results) == calls
    return layer, wall, server.ideal_time(calls, tokens=server.charge(**ask(100)), start=start)
