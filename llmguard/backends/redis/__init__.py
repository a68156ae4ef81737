"""Shared quotas, concurrency and cache across processes through Redis (extra ``redis``).

::

    backend = RedisBackend("redis://127.0.0.1:6379/0", on_error="local")
    lg.RateLimit(rpm=500, tpm=200_000, backend=backend)
    lg.ConcurrencyLimit(RedisConcurrencyLimiter(backend, 32, name="openai"))
    lg.Cache(ttl=300, store=RedisStore(backend))

Importing :mod:`llmguard` never imports redis-py; importing this module does not either (the
client is created on first use).
"""

from ._concurrency import RedisConcurrencyLimiter
from ._ratelimit import RedisBackend
from ._store import RedisStore, RedisStoreStats, ValueTooLarge

__all__ = ["RedisBackend", "RedisConcurrencyLimiter", "RedisStore", "RedisStoreStats",
           "ValueTooLarge"]
