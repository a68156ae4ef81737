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
              jitter: float | None = 0.01, tpm: int = 10_000,
              rpm: int = 60) -> tuple[Any, float, float]:
    """``calls`` at once ``phase`` s into the minute through the README stack (RateLimit
    with only ``rpm`` and ``tpm``), each 0 to ``jitter`` s on the way (drawn from ``seed``;
    None: sent at once), every call done (a failed one raises here): the RateLimit layer, the
    wall time and the server's ideal."""
    with virtual_wall_clock():
        loop = asyncio.get_running_loop()
        await asyncio.sleep((phase - loop.time() % 60) % 60)
        pipeline = (lg.Pipeline(name="late").metrics().cache(ttl=300)
                    .fallback({"model": "backup"}).retry(attempts=4, seed=seed)
                    .circuit_breaker().timeout(30).rate_limit(rpm=rpm, tpm=tpm)
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


async def run_split(server: Any, phase: float, calls: int) -> tuple[Any, float, float]:
    """``calls`` at once ``phase`` s into the minute through the README stack with only
    ``rpm=60, input_tpm=8_000, output_tpm=3_000`` against ``server`` (an
    :class:`~llmguard.testing.InputOutputBucketServer` of those quotas, answering 64 of the 200
    output tokens each call asks), every call done: the RateLimit layer, the wall time and the
    server's ideal (its answers' unused output given back or not, as it does)."""
    prompt = "word " * 70
    with virtual_wall_clock():
        loop = asyncio.get_running_loop()
        await asyncio.sleep((phase - loop.time() % 60) % 60)
        pipeline = (lg.Pipeline(name="split").metrics().cache(ttl=300).retry(attempts=4)
                    .circuit_breaker().timeout(30)
                    .rate_limit(rpm=60, input_tpm=8_000, output_tpm=3_000)
                    .concurrency_limit(32))
        layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
        server.on_headers.append(layer.observe_headers)
        send = pipeline.wrap(server.amessages)
        start = loop.time()
        results = await asyncio.gather(*(send(model="m", max_tokens=200, messages=[
            {"role": "user", "content": f"{prompt}{i}"}]) for i in range(calls)))
        wall = loop.time() - start
    assert len(results) == calls
    used = server.output_tokens if server.refunds_output else 200
    ideal = server.ideal_time(calls, start=start, input_tokens=server.charge(
        messages=[{"role": "user", "content": f"{prompt}100"}], max_tokens=0),
        max_tokens=200, output_tokens=used)
    return layer, wall, ideal
