"""Cache stores: the async protocol a shared store (Redis) implements, and the in-memory store."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cachetools import TLRUCache
from .._core.public import public

__all__ = ["MISSING", "CacheStore", "MemoryStore", "StoreStatistics"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by :meth:`CacheStore.get` for an absent or expired key (``None`` is a valid value).
MISSING: Any = _Missing()


@public
@runtime_checkable
class CacheStore(Protocol):
    """Where a :class:`Cache` keeps results. Implement it to share a cache (e.g. Redis).

    Keys are ``str`` (a sha256 hex digest unless a custom ``key`` returned a str), the same in
    every process. Values are whatever the guarded function returned (a completion object, a
    dict, a str); a store that crosses process boundaries serialises them and may raise for a
    value it cannot serialise. Methods are called concurrently from one event loop. A method that
    raises ``Exception`` does not fail the LLM call: :class:`Cache` counts it (``store_errors``)
    and treats a failed ``get`` as a miss and a failed ``set`` as not cached, so an outage of a
    shared store degrades to no caching. Expiry is the store's job (``ttl`` per entry).

    A store whose ``get`` takes a fill lock on a miss (single-flight across processes) may also
    define ``abandon(key)`` (synchronous, non-blocking): the Cache calls it when a miss ends
    without a ``set`` (the call failed or was cancelled, ``cache_if`` refused the result, a
    stream ended incomplete) so the lock is released at once.
    """

    async def get(self, key: str) -> Any:
        """The value stored under ``key``, or ``llmguard.Cache.MISSING`` if absent or expired
        (``None`` is a value like any other)."""

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (> 0), replacing any previous one."""

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present (no error when absent)."""

    async def clear(self) -> None:
        """Remove every entry of this store (only this cache's namespace in a shared backend)."""

    def statistics(self) -> Any:
        """A frozen snapshot of the store's state (at least ``size``), without I/O if possible."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    #: Entries held now (expired entries not yet purged may be counted until the next access).
    size: int
    #: Capacity bound.
    maxsize: int
    #: Entries dropped to make room (least recently used first), not counting expiries.
    evictions: int


class _Clock:
    """The running loop's clock, so looptime fast-forwards expiry; the last reading outside one."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> float:
        try:
            self.last = asyncio.get_running_loop().time()
        except RuntimeError:  # statistics() or repr() from sync code: keep the loop's timeline
            pass
        return self.last


class _Entries(TLRUCache):
    # TLRUCache (per-item expiry + LRU) rather than TTLCache: the store protocol sets a ttl per
    # entry. popitem is what cachetools calls to make room, so it is where evictions are counted.
    evictions = 0

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evictions += 1
        return item


def _expires(_key: Any, value: tuple[Any, float], now: float) -> float:
    return now + value[1]


@public
class MemoryStore:
    """A bounded in-process store: least-recently-used eviction, per-entry expiry on loop time."""

    __slots__ = ("_entries",)

    def __init__(self, maxsize: int = 10_000) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize <= 0:
            raise ValueError(f"maxsize must be a positive int (entries), got {maxsize!r}")
        #: key -> (value, ttl), on cachetools' TLRUCache.
        self._entries = _Entries(maxsize, _expires, timer=_Clock())

    def lookup(self, key: str) -> Any:
        """Synchronous :meth:`get`: the hit path of :class:`Cache` skips a coroutine with it."""
        entry = self._entries.get(key, MISSING)
        return entry if entry is MISSING else entry[0]

    async def get(self, key: str) -> Any:
        return self.lookup(key)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self._entries[key] = (value, ttl)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def clear(self) -> None:
        self._entries.clear()

    def statistics(self) -> StoreStatistics:
        self._entries.expire()
        return StoreStatistics(len(self._entries), int(self._entries.maxsize),
                               self._entries.evictions)

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<MemoryStore size={s.size}/{s.maxsize} evictions={s.evictions}>"
