"""Redis down mid-run: on_error="fail" raises BackendUnavailable, on_error="local" falls back to
local limits with one warning, and both resume on Redis once it is back.

Each test runs its own throwaway redis-server on a free port (never the shared one), kills it and
restarts it. Real time: looptime is off; every wait is bounded by the backend's timeout.
"""

import asyncio
import logging
import shutil

import pytest
from redis_server import Server

import llmguard as lg
from llmguard._admission.ratelimit.window import Entry, Quota
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, _charge, _client

pytestmark = [
    pytest.mark.looptime(False),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

QUOTAS = (Quota(100, 1.0, False),)


async def test_fail_closed_raises_backend_unavailable_then_recovers(server):
    """With on_error="fail" a reservation while Redis is down raises BackendUnavailable saying
    what failed and what to change; after a restart it is admitted by Redis again (the scripts
    are loaded again on NOSCRIPT) once the restart fence has passed: the window Redis lost
    counts as full for one window."""
    backend = RedisBackend(server.url, on_error="fail", timeout=5.0)
    assert (await backend.reserve(None, QUOTAS, 0))[1] is not None
    server.stop()
    with pytest.raises(lg.BackendUnavailable, match="on_error='local'"):
        await backend.reserve(None, QUOTAS, 0)
    limiter = RedisConcurrencyLimiter(backend, 2)
    with pytest.raises(lg.BackendUnavailable):
        await limiter.acquire()
    assert limiter.in_flight == 0 and limiter.statistics().in_flight == 0
    server.start()
    wait, ticket = await backend.reserve(None, QUOTAS, 0)
    assert ticket is None and 0 < wait <= 1.1  # the lost 1 s window counts as full
    await asyncio.sleep(wait)
    wait, ticket = await backend.reserve(None, QUOTAS, 0)
    assert isinstance(ticket, str)  # a Redis ticket, not a local one
    await backend.aclose()


async def test_fall_back_to_local_limits_with_one_warning(server, caplog):
    """With on_error="local" calls keep being admitted under this process's limits while Redis
    is down, with a single warning for the outage, and go back to Redis once it answers."""
    backend = RedisBackend(server.url, on_error="local", timeout=5.0)
    limit = lg.RateLimit(rps=50, backend=backend)
    guarded = lg.guard(limit)(_value)
    assert await guarded() == 1
    server.stop()
    with caplog.at_level(logging.WARNING, logger="llmguard.redis"):
        for _ in range(10):
            assert await guarded() == 1
        assert sum("falling back to local limits" in r.getMessage() for r in caplog.records) == 1
        server.start()
        for _ in range(500):  # past the patched RETRY_INTERVAL, however loaded the machine
            await asyncio.sleep(0.06)
            wait, ticket = await backend.reserve(None, limit.quotas, 0)
            if not isinstance(ticket, Entry):  # Redis answered (local limits admit an Entry)
                break
        assert ticket is None and 0 < wait <= 1.1  # the restart fence: one 1 s window
        await asyncio.sleep(wait)
        wait, ticket = await backend.reserve(None, limit.quotas, 0)
    assert ticket is not None and not isinstance(ticket, Entry)  # Redis's, not a local one
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert limit.statistics().admitted == 11
    await backend.aclose()


async def _value():
    return 1


async def test_the_redis_password_is_never_printed(redis_url, monkeypatch, caplog):
    """Issue 21 #5: a URL's password (``redis://:PASSWORD@host``) appears in no repr, no
    BackendUnavailable and no warning logged during an outage and its recovery."""
    monkeypatch.setattr(_client, "RETRY_INTERVAL", 0.05)
    password = "s3cr3t-hunter2"
    server = Server(password)
    server.start()
    try:
        failing = RedisBackend(server.url, on_error="fail", timeout=5.0)
        local = RedisBackend(server.url, on_error="local", timeout=5.0)
        limit = lg.RateLimit(rps=50, backend=local)
        guarded = lg.guard(limit)(_value)
        assert await guarded() == 1 and (await failing.reserve(None, QUOTAS, 0))[1] is not None
        shown = [repr(failing), repr(local), repr(RedisConcurrencyLimiter(failing, 2))]
        server.stop()
        with pytest.raises(lg.BackendUnavailable) as info:
            await failing.reserve(None, QUOTAS, 0)
        shown += [str(info.value), repr(info.value)]
        with caplog.at_level(logging.WARNING, logger="llmguard.redis"):
            assert await guarded() == 1
            server.start()
            await asyncio.sleep(0.06)
            await local.reserve(None, limit.quotas, 0)
        shown += [r.getMessage() for r in caplog.records]
        assert any("falling back" in m for m in shown) and any("answers again" in m for m in shown)
        assert any("127.0.0.1" in m for m in shown)
        assert not [m for m in shown if password in m]
        await failing.aclose()
        await local.aclose()
    finally:
        server.stop()


#: A token quota whose shape and charge are learned (``refill="auto"``).
TOKENS = (Quota(1_000, 60.5, True, learn=True, margin=0.5),)


async def test_a_429_on_tokens_during_an_outage_is_learned_as_in_memory(redis_url):
    """The mirror's window has its shared charge from the start (made with the window, the
    same object after a reservation in Redis). Then Redis goes down: eight requests of 100
    tokens admitted locally, the eighth refused with a 429 on tokens before the server said
    anything of them. No shared log holds them, so this process learns the charge from them
    as the in-memory backend does from the same admissions (kept, the same factor, and the
    next local reservation counted at it); a shared charge learned nothing from it."""
    server = Server()
    server.start()
    backend = RedisBackend(server.url, timeout=30.0)
    memory = lg.backends.MemoryBackend()
    try:
        mirror = backend._local.window(None, TOKENS).charge
        assert isinstance(mirror, _charge.SharedCharge)
        _, first = await backend.reserve(None, TOKENS, 100)
        assert backend._local.window(None, TOKENS).charge is mirror
        backend.refund(None, first)  # (counted by neither, so both count the same eight)
        server.stop()
        for each in (backend, memory):
            tickets = [(await each.reserve(None, TOKENS, 100))[1] for _ in range(8)]
            assert all(isinstance(t, Entry) for t in tickets)  # local, not Redis's
            each.refused(None, TOKENS, 1.0, ticket=tickets[-1])
        learned = memory.window(None, TOKENS).charge
        assert learned.how == "kept" and learned.factor > 1.15
        assert (mirror.how, mirror.factor, mirror.alone) == ("kept", learned.factor, False)
        assert mirror.units(100) == learned.units(100) > 115
    finally:
        server.stop()
        await backend.aclose()
