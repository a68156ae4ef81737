"""Shared circuit state through Redis: one process opening the circuit opens it for all.

Real time (the opening is a key with a TTL on the server clock): looptime off, sub-second polls.
"""

import asyncio

import pytest

import llmguard as lg
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)


async def test_one_process_opening_the_circuit_opens_it_for_the_other(redis_url, redis_prefix):
    """Breaker A (one process) sees the provider fail and opens; breaker B (another process,
    same name and prefix) refuses its next call within a poll, for A's remaining open time."""
    backends = [RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0) for _ in range(2)]
    a, b = (lg.CircuitBreaker(min_calls=2, open_for=1.0, name="openai", backend=backend)
            for backend in backends)

    async def down():
        raise ConnectionError("provider down")

    async def up():
        return "ok"

    assert await lg.guard(b)(up)() == "ok"  # B is closed and following the shared verdict
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await lg.guard(a)(down)()
    assert a.state.value == "open"
    for _ in range(40):  # bounded: 2 s at most
        if b.state.value == "open":
            break
        await asyncio.sleep(0.05)
    with pytest.raises(lg.CircuitOpenError):
        await lg.guard(b)(up)()
    assert 0 < b.statistics().retry_after <= 1.0
    for backend in backends:
        await backend.aclose()


async def test_a_dropped_breaker_stops_polling(redis_url, redis_prefix):
    """Breakers created per model or tenant and then dropped do not pile up: each one's poller
    ends once its owner lets go of it, while a breaker still in use keeps following."""
    import gc

    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)

    async def up():
        return "ok"

    kept = lg.CircuitBreaker(open_for=0.2, name="kept", backend=backend)
    assert await lg.guard(kept)(up)() == "ok"
    for i in range(50):
        breaker = lg.CircuitBreaker(open_for=0.2, name=f"tenant{i}", backend=backend)
        assert await lg.guard(breaker)(up)() == "ok"  # starts its poller
    assert len(backend.connection.loops) == 51
    del breaker
    gc.collect()
    await asyncio.sleep(0.12)  # two polls (every 0.05 s)
    assert len(backend.connection.loops) == 1
    await backend.aclose()
