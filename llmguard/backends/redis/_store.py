"""RedisStore: a Cache store in Redis, with single-flight across processes."""

from __future__ import annotations

import asyncio
import random
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..._cache.store import MISSING
from ..._core.check import number, text
from ..._core.sweep import SWEEP_AT, sweep
from ._client import Connection
from ._codec import Codec
from ._slots import poll_delay
from ._ratelimit import RedisBackend

__all__ = ["RedisStore", "RedisStoreStats", "ValueTooLarge"]


#: Seconds: about 31 years, "for ever" for a cache entry, and far inside what Redis accepts.
MAX_TTL = 1e9

#: Deletes the fill lock only if this process still owns it (its lease may have expired and
#: another process taken it).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ValueTooLarge(ValueError):
    """A value serialised to more than ``max_bytes``: not stored (the call itself succeeds)."""


@dataclass(frozen=True, slots=True)
class RedisStoreStats:
    #: Entries written by this process (Redis expires them on its own; not a live count).
    size: int
    hits: int
    misses: int
    #: Lookups that waited for another process filling the same key, then found its value.
    coalesced: int
    #: Values refused for exceeding max_bytes (ValueTooLarge).
    too_large: int
    #: Commands that failed or timed out (the Cache layer treats them as misses).
    errors: int


class RedisStore:
    """A :class:`llmguard.backends.CacheStore` in Redis: ``Cache(ttl=300, store=RedisStore(backend))``.

    * Values are serialised with JSON by default, with type tags so a hit returns what the
      miss stored, unchanged (``{1: 0.5}`` keeps its int key, a tuple stays a tuple; sets and
      bytes too): see ``_codec.py`` for why not plain JSON, pickle or marshal. A value of
      another type is not cached (the Cache layer counts a store error, the call succeeds).
      ``serializer="pickle"`` stores any picklable object (SDK response objects) but only use it
      on a Redis nobody untrusted can write to; or pass an object with ``dumps``/``loads``.
    * ``max_bytes`` (default 1 MiB): a larger serialised value raises :class:`ValueTooLarge`,
      which the Cache layer counts as a store error: the result is returned, not cached.
    * TTL is Redis's (``SET ... PX``); keys live under ``<prefix>:cache:<len(namespace)>:<namespace>:`` (``entry:<key>``, ``lock:<key>``).
    * Single-flight across processes: on a miss, one process takes a short lock
      (``SET NX PX lock_ttl``) and calls the provider; the others poll for its value for up to
      ``lock_ttl`` seconds instead of calling the provider too. If the filler fails, the Cache
      calls :meth:`abandon` and the lock is released at once; if the filler dies, the lock
      lapses and the next process fills (a duplicate call, never a hang). This process forgets
      a lock that lapsed unreleased, so its record of held locks stays bounded.
    """

    #: The longest ``ttl`` a :class:`Cache` over this store accepts (checked when the Cache is
    #: built): Redis expiry times are milliseconds in a 64-bit integer, and a ttl beyond it was
    #: refused by Redis on every write, so nothing was ever cached.
    max_ttl = MAX_TTL

    __slots__ = ("connection", "namespace", "max_bytes", "lock_ttl", "_codec", "_prefix",
                 "_locks", "_sweep_at", "_size", "_hits", "_misses", "_coalesced", "_too_large")

    def __init__(
        self,
        backend: RedisBackend,
        *,
        namespace: str = "default",
        serializer: Any = "json",
        max_bytes: int = 1 << 20,
        lock_ttl: float = 10.0,
    ) -> None:
        if not isinstance(backend, RedisBackend):
            raise TypeError(f"backend must be a RedisBackend, got {backend!r}")
        number("max_bytes", max_bytes, integer=True, hint=" (bytes)")
        number("lock_ttl", lock_ttl, low_open=False, high=MAX_TTL, unit=" of seconds",
               hint=" (0 turns cross-process single-flight off)")
        text("namespace", namespace)
        self.connection: Connection = backend.connection
        self.namespace = namespace
        self.max_bytes = max_bytes
        self.lock_ttl = float(lock_ttl)
        self._codec = Codec(serializer)
        # The namespace is length-prefixed, so no namespace is a prefix of another ("a" is
        # "1:a:", "a:b" is "3:a:b:") and no key of one ("b:x" in "a") names a key of another.
        self._prefix = f"{self.connection.prefix}:cache:{len(namespace)}:{namespace}:"
        # key -> (our lock token, loop time it lapses) while this process fills the key.
        self._locks: dict[str, tuple[str, float]] = {}
        self._sweep_at = SWEEP_AT
        self._size = self._hits = self._misses = self._coalesced = self._too_large = 0

    async def _get(self, key: str) -> bytes | None:
        return await self.connection.run(lambda: self.connection.redis.get(self._prefix + 'entry:' + key),
                                         "reading the cache")

    async def get(self, key: str) -> Any:
        raw = await self._get(key)
        if raw is None and self.lock_ttl and not self._filling(key):
            raw = await self._wait_or_lead(key)
        if raw is None:
            self._misses += 1
            return MISSING
        self._hits += 1
        return self._codec.loads(raw)

    def _filling(self, key: str) -> bool:
        """True while this process holds the key's fill lock (not lapsed)."""
        held = self._locks.get(key)
        return held is not None and held[1] > asyncio.get_running_loop().time()

    def _hold(self, key: str, token: str, lapses: float) -> None:
        # A fill that failed never calls set(), so its lock is never released here: forget the
        # lapsed ones (Redis has already expired them) once the record has doubled.
        locks = self._locks
        if key not in locks and len(locks) >= self._sweep_at:
            now = asyncio.get_running_loop().time()
            self._sweep_at = sweep(locks, lambda held: held[1] <= now)
        locks[key] = (token, lapses)

    async def _wait_or_lead(self, key: str) -> bytes | None:
        """Take the fill lock (return None: we call the provider) or wait for the filler."""
        redis, lock = self.connection.redis, f"{self._prefix}lock:{key}"
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_ttl
        attempt = 0
        while loop.time() < deadline:
            taken = await self.connection.run(
                lambda: redis.set(lock, token, nx=True, px=max(1, int(self.lock_ttl * 1000))),
                "taking the cache fill lock",
            )
            if taken:
                self._hold(key, token, loop.time() + self.lock_ttl)
                return None
            if taken is None and self.connection.down():
                return None
            await asyncio.sleep(poll_delay(attempt, self.lock_ttl, rand=random.random()))
            attempt += 1
            raw = await self._get(key)
            if raw is not None:
                self._coalesced += 1
                return raw
        return None

    async def set(self, key: str, value: Any, ttl: float) -> None:
        try:
            data = self._codec.dumps(value)
            if len(data) > self.max_bytes:
                self._too_large += 1
                raise ValueTooLarge(
                    f"the value for cache key {key[:16]}... serialises to {len(data)} bytes, over "
                    f"max_bytes={self.max_bytes}; it was not cached: raise max_bytes or cache "
                    "smaller results (cache_if=)"
                )
            if await self.connection.run(
                lambda: self.connection.redis.set(self._prefix + 'entry:' + key, data,
                                                  px=max(1, int(ttl * 1000))),
                "writing the cache",
            ):
                self._size += 1
        finally:
            self._unlock(key)

    def abandon(self, key: str) -> None:
        """This miss will not be filled (the call failed, or ``cache_if`` refused the result):
        release its fill lock now, so other processes stop waiting and fill it themselves."""
        self._unlock(key)

    def _unlock(self, key: str) -> None:
        held = self._locks.pop(key, None)
        if held is not None:
            self.connection.spawn(self.connection.write(
                _UNLOCK, [f"{self._prefix}lock:{key}"], [held[0]], "releasing the cache fill lock",
            ))

    async def delete(self, key: str) -> None:
        await self.connection.run(lambda: self.connection.redis.delete(self._prefix + 'entry:' + key),
                                  "deleting from the cache")

    async def clear(self) -> None:
        """Delete this namespace's keys (SCAN + UNLINK; other namespaces are untouched)."""
        redis = self.connection.redis

        async def clear() -> None:
            batch = []
            # glob characters in the prefix ("t[12]") are escaped: they match only themselves
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + "*"
            async for name in redis.scan_iter(match=pattern, count=500):
                batch.append(name)
                if len(batch) >= 500:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)

        await self.connection.run(clear, "clearing the cache")
        self._size = 0

    def statistics(self) -> RedisStoreStats:
        return RedisStoreStats(self._size, self._hits, self._misses, self._coalesced,
                               self._too_large, self.connection.errors)

    def __repr__(self) -> str:
        return (f"<RedisStore {self._prefix!r} hits={self._hits} misses={self._misses} "
                f"coalesced={self._coalesced}>")
