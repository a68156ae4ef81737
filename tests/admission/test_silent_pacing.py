"""The README stack with default settings (only ``rpm``/``tpm`` given) against servers that
send no rate-limit headers and charge more tokens than our estimate (1.11x: OpenAI counts a
request's characters, framing included), the token quota binding, demand 3x the quota, each
request 0-10 ms on the way. Nothing in the answers says what the server counted: the opening
burst is reserved at the estimate times ``OPENING``, kept when answers report no tokens, then
probed one request at a time until a refusal on tokens measures the factor (``probing.py``,
``charge.py``). Before: 33 429s of 126 on every shape (the room a trusted estimate freed went
at once into a server still counting 1.11x, then "the server admits 56 requests" was learned
from a refusal on tokens). Virtual time."""

import asyncio
import random
from typing import Any

import pytest

import llmguard as lg
from llmguard.testing import (FixedWindowServer, ProxyWindowServer, SlidingWindowServer,
                              virtual_wall_clock)

CALLS = 126  #: 3x the 42 requests of 238 tokens the server admits per minute


def ask(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question number {i}"}],
            "max_tokens": 200}


def jittered(server: Any, most: float, seed: int = 0) -> Any:
    """``server.acompletion`` behind a network taking 0 to ``most`` s to reach it."""
    rng = random.Random(seed)

    async def send(**kwargs: Any) -> Any:
        await asyncio.sleep(rng.uniform(0, most))
        return await server.acompletion(**kwargs)

    return send


def readme_stack(server: Any) -> Any:
    """The README's recommended stack, only the quotas given, the server's headers (none
    here) read as an HTTP client would."""
    pipeline = (lg.Pipeline(name="silent").metrics().cache(ttl=300)
                .fallback({"model": "backup"}).retry(attempts=4, seed=0).circuit_breaker()
                .timeout(30).rate_limit(rpm=60, tpm=10_000).concurrency_limit(32))
    for layer in pipeline.layers:
        if isinstance(layer, lg.RateLimit):
            server.on_headers.append(layer.observe_headers)
    return pipeline.wrap(jittered(server, 0.01))


SHAPES = {"fixed window": FixedWindowServer, "sliding window": SlidingWindowServer,
          "clock-minute proxy": ProxyWindowServer}


@pytest.mark.parametrize(("shape", "phase", "within", "most"), [
    ("fixed window", 0.0, 1.05, 1), ("fixed window", 40.0, 1.05, 1),
    ("sliding window", 0.0, 1.05, 3), ("sliding window", 40.0, 1.05, 3),
    ("clock-minute proxy", 0.0, 1.10, 1)])
async def test_a_server_that_says_nothing_and_charges_more_refuses_one_request_at_most(
        shape: str, phase: float, within: float, most: int) -> None:
    """At most one 429 (under 1% of 126) on a fixed window and the clock-minute proxy, every
    call done, the wall time within 1.05x the server's ideal (1.02-1.03x measured), 1.10x on
    the proxy (``rpm - 1``). Started 40 s into a fixed window's minute, the one 429's pause
    ends at the minute, before our oldest request would leave a sliding window: a fixed window,
    learned from it (1.51x before, paced as a sliding log). A sliding window refuses two more,
    a window apart (24 before this change): calls admitted at the opening, then queued 2 s
    below for a concurrency slot, reach the server 2 s after we counted them, so they leave
    our log before its window (the margin covers the way there, not a queue below)."""
    with virtual_wall_clock():  # the servers' minutes (loop time) are the wall clock's
        server = SHAPES[shape](rpm=60, tpm=10_000, latency=2.0, charge_factor=1 / 0.9,
                               rate_limit_headers=False)
        loop = asyncio.get_running_loop()
        now_phase = server.phase() if isinstance(server, ProxyWindowServer) else loop.time() % 60
        await asyncio.sleep((phase - now_phase) % 60)
        send = readme_stack(server)
        start = loop.time()
        results = await asyncio.gather(*(send(model="primary", **ask(i)) for i in range(CALLS)))
        wall = loop.time() - start
    assert len(results) == CALLS
    assert server.statistics().rate_limited <= most
    ideal = server.ideal_time(CALLS, tokens=server.charge(**ask(100)), start=start)
    assert wall <= within * ideal, (wall, ideal)
