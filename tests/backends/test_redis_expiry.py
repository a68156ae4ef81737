"""Redis memory stays bounded too: every key llmguard writes in Redis carries a TTL, so keys of
users, prompts and circuits nobody uses any more disappear on their own. Real time (looptime
off); the workload below runs every script and command that writes."""

import asyncio

import pytest

import llmguard as lg
from llmguard._cache.store import MISSING
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, RedisStore

pytestmark = pytest.mark.looptime(False)


async def test_every_key_written_expires(redis_url, redis_prefix):
    """Rate limits (reserve, reconcile, refund, pause, provider caps, a refused reservation),
    concurrency leases (acquire, renew, release), cache values and fill locks, and a shared
    circuit opening: afterwards every key under the prefix has a TTL (none is persistent)."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    quotas = (Quota(2, 0.5, False), Quota(100, 0.5, True))
    for key in ("a", "b", None):
        _, first = await backend.reserve(key, quotas, 10)
        _, second = await backend.reserve(key, quotas, 10)
        assert (await backend.reserve(key, quotas, 10))[1] is None  # refused: writes nothing
        backend.reconcile(key, first, 5)
        backend.refund(key, second)
    backend.pause("b", quotas, 2.0)
    backend.cap("c", quotas, True, 50, 3.0)  # a key only ever capped, never reserved
    backend.cap("a", quotas, False, 1, 3.0)
    buckets = tuple(Quota(q.limit, q.window, q.tokens, True) for q in quotas)
    for key in ("bucket", "bucket-drained"):  # refill="continuous": reserve, settle, drain
        _, first = await backend.reserve(key, buckets, 10)
        _, second = await backend.reserve(key, buckets, 10)
        backend.reconcile(key, first, 5)
        backend.refund(key, second)
    backend.cap("bucket-drained", buckets, True, 3, 30.0)
    backend.cap("bucket-only-drained", buckets, False, 1, 30.0)
    await backend.connection.aclose()  # waits for the background writes (reconnects on use)
    assert (await backend.reserve("a", quotas, 1))[1] is not None  # spends the capped request

    limiter = RedisConcurrencyLimiter(backend, 2, name="leases", lease=0.3)
    await limiter.acquire()
    await limiter.acquire()
    await asyncio.sleep(0.15)  # one renewal of both leases
    limiter.release()

    store = RedisStore(backend, lock_ttl=5)
    assert await store.get("filled") is MISSING  # takes the fill lock, released by set()
    await store.set("filled", {"answer": 1}, 60)
    await store.get("abandoned")  # takes a fill lock that is never released (a failed fill)

    breaker = lg.CircuitBreaker(name="provider", backend=backend, open_for=5)
    breaker.force_open()

    await backend.connection.aclose()  # waits for the background writes
    redis = backend.connection.redis
    names = [name async for name in redis.scan_iter(match=redis_prefix + "*")]
    ttls = {name.decode(): await redis.pttl(name) for name in names}
    await backend.aclose()
    kinds = {name.split(":")[1] for name in ttls}
    assert kinds == {"rl", "cc", "cache", "circuit"}, ttls  # the workload wrote each kind
    # -1 is a key without a TTL (the bug this guards against); -2 one that expired between the
    # scan and the PTTL on a slow machine, which is the point.
    assert all(ttl > 0 or ttl == -2 for ttl in ttls.values()), ttls
