"""RedisBackend for RateLimit against the real Redis: the in-memory semantics, shared by processes.

These tests run on real time (the server clock is the quota's clock), so looptime is off and every
window and wait is sub-second and bounded.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmguard as lg
from llmguard._window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).parent.parent
REQUESTS = (Quota(3, 0.3, False),)
TOKENS = (Quota(3, 0.3, False), Quota(100, 0.3, True))


async def test_reserve_admits_up_to_the_quota_then_says_how_long_to_wait(redis_url, redis_prefix):
    """Three requests fit a 3-per-0.3 s quota; the fourth gets a wait within the window, nothing
    recorded, and is admitted once that wait has passed."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    tickets = [await backend.reserve(None, REQUESTS, 0) for _ in range(3)]
    assert all(wait == 0.0 and ticket for wait, ticket in tickets)
    wait, ticket = await backend.reserve(None, REQUESTS, 0)
    assert ticket is None and 0.0 < wait <= 0.31
    await asyncio.sleep(wait)
    assert (await backend.reserve(None, REQUESTS, 0))[0] == 0.0
    await backend.aclose()


async def test_two_backends_share_one_quota(redis_url, redis_prefix):
    """Two backends (as two processes would) with the same prefix draw on one quota."""
    a, b = RedisBackend(redis_url, prefix=redis_prefix), RedisBackend(redis_url, prefix=redis_prefix)
    results = [await (a if i % 2 else b).reserve("key", REQUESTS, 0) for i in range(4)]
    assert [ticket is not None for _, ticket in results] == [True, True, True, False]
    assert (await a.reserve("other", REQUESTS, 0))[1] is not None  # keys are separate quotas
    await a.aclose()
    await b.aclose()


async def test_reconcile_and_refund_give_tokens_back(redis_url, redis_prefix):
    """A reservation reconciled down frees the difference; a refund frees it all (also the
    request); both are applied in the background and visible to the next reservation."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    _, first = await backend.reserve(None, TOKENS, 60)
    assert (await backend.reserve(None, TOKENS, 60))[1] is None  # 120 > 100 tokens
    backend.reconcile(None, first, 10)
    await backend.connection.aclose()  # waits for the background write
    _, second = await backend.reserve(None, TOKENS, 60)  # 70 <= 100
    assert second is not None
    assert (await backend.reserve(None, TOKENS, 60))[1] is None
    backend.refund(None, second)
    await backend.connection.aclose()
    assert (await backend.reserve(None, TOKENS, 60))[1] is not None
    assert backend.headroom(None, TOKENS)[1] == 30  # as of that reservation: 100 - 10 - 60
    await backend.aclose()


async def test_pause_is_shared_and_never_shortened(redis_url, redis_prefix):
    """A 429's pause written by one process stops admissions in another; a shorter pause later
    does not shorten it."""
    a, b = RedisBackend(redis_url, prefix=redis_prefix), RedisBackend(redis_url, prefix=redis_prefix)
    a.pause(None, REQUESTS, 0.4)
    a.pause(None, REQUESTS, 0.05)
    await a.aclose()
    wait, ticket = await b.reserve(None, REQUESTS, 0)
    assert ticket is None and 0.2 < wait <= 0.4
    await asyncio.sleep(wait)
    assert (await b.reserve(None, REQUESTS, 0))[1] is not None
    await b.aclose()


async def test_provider_cap_limits_admissions_until_reset(redis_url, redis_prefix):
    """x-ratelimit-remaining-requests=1 with a 0.2 s reset admits one request, then waits for the
    reset, even though the configured quota has room."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    quotas = (Quota(100, 1.0, False),)
    backend.cap(None, quotas, False, 1, 0.2)
    await backend.connection.aclose()
    assert (await backend.reserve(None, quotas, 0))[1] is not None
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and 0.0 < wait <= 0.21
    await backend.aclose()


async def test_ratelimit_layer_with_redis_backend_needs_no_other_change(redis_url, redis_prefix):
    """RateLimit(..., backend=RedisBackend(url)) admits, queues FIFO in the process, reconciles to
    usage and refunds refused calls; statistics() is back to baseline afterwards."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    limit = lg.RateLimit(rps=4, backend=backend)
    order = []

    async def fn(i):
        order.append(i)
        return i

    guarded = lg.guard(limit)(fn)
    assert await asyncio.gather(*(guarded(i) for i in range(6))) == list(range(6))
    assert order == list(range(6))  # FIFO within the process
    stats = limit.statistics()
    assert (stats.admitted, stats.in_flight, stats.waiting) == (6, 0, 0)
    await backend.aclose()


WORKER = """
import asyncio, sys, llmguard as lg
from llmguard.backends.redis import RedisBackend

async def main(url, prefix):
    backend = RedisBackend(url, prefix=prefix)
    limit = lg.RateLimit(rpm=15, max_wait=0.5, backend=backend)
    guarded = lg.guard(limit)(asyncio.sleep)
    results = await asyncio.gather(*(guarded(0) for _ in range(10)), return_exceptions=True)
    await backend.aclose()
    print(sum(r is None for r in results), sum(isinstance(r, lg.AdmissionTimeout) for r in results))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_processes_sharing_one_quota_never_exceed_it(redis_url, redis_prefix):
    """Three processes, 10 calls each, on one rpm=15 quota: exactly 15 calls are admitted in all
    (the whole quota, never more), the other 15 time out waiting; the log holds 15 admissions."""
    import redis

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_url, redis_prefix], env=env,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    counts = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert sum(admitted for admitted, _ in counts) == 15
    assert sum(timed_out for _, timed_out in counts) == 15
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{redis_prefix}:rl:{{}}:log") == 15
    client.close()


def test_construction_errors_name_the_argument():
    """Bad arguments fail at construction with a message naming them."""
    with pytest.raises(ValueError, match="on_error"):
        RedisBackend(on_error="ignore")
    with pytest.raises(ValueError, match="timeout"):
        RedisBackend(timeout=0)
    with pytest.raises(ValueError, match="url"):
        RedisBackend("localhost")
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(prefix="")
