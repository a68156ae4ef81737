"""Any mutable mapping as a Cache store: a ``cachetools`` cache the user already has.

``Cache(ttl=300, store=cachetools.LRUCache(maxsize=5_000))`` (or ``TTLCache``, ``LFUCache``,
``RRCache``: any mutable mapping with a ``maxsize``; a plain dict is refused, it would grow
without bound) keeps the entries in that mapping, with its eviction policy; the
Cache still expires each entry ``ttl`` seconds after it was stored, on the event loop's clock
(a ``TTLCache``'s own ttl runs too, on its own timer: the shorter one wins). cachetools is never
imported here (the mapping brings it).

Why MemoryStore stays the default: it keeps answers made of builtin types as marshal snapshots
(a C-speed copy per hit) and purges expired entries before evicting live ones, and it counts
evictions, which a mapping cannot report; and per hit it is cheaper than this adapter: 17.4
µs a hit against 24.5 over a ``cachetools.LRUCache`` (1.41x) and 29.1 over a ``TTLCache``
(1.68x) in ``benchmarks/bench_adapters.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

from .store import MISSING, CacheStore, MemoryStore, StoreStatistics
from .stream import fresh

__all__ = ["MappingStore", "store_of"]


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # statistics() from sync code
        return time.monotonic()


class MappingStore:
    """A :class:`~llmguard.CacheStore` over a mutable mapping (a ``cachetools`` cache).

    Each entry is ``(copy of the value, expiry on loop time)``; reads hand out a new copy, so
    no caller's edits reach another (``copies`` is True), as with the in-memory store. Used
    from one event loop (cachetools caches are not thread-safe; neither is this).
    """

    #: Stored values are copies, and ``get``/``lookup`` return copies no other caller holds.
    copies = True

    __slots__ = ("mapping",)

    def __init__(self, mapping: MutableMapping[Any, Any]) -> None:
        if not isinstance(mapping, MutableMapping):
            raise TypeError(f"expected a mutable mapping (a cachetools cache), got {mapping!r}")
        #: The user's mapping, holding ``key -> (value, expiry)``.
        self.mapping = mapping

    def lookup(self, key: str) -> Any:
        """Synchronous :meth:`get` (the Cache's hit path skips a coroutine with it)."""
        entry = self.mapping.get(key)
        if entry is None:
            return MISSING
        if entry[1] <= _now():
            self.mapping.pop(key, None)
            return MISSING
        return fresh(entry[0])

    async def get(self, key: str) -> Any:
        return self.lookup(key)

    def put(self, key: str, value: Any, ttl: float) -> None:
        """Synchronous :meth:`set`."""
        self.mapping[key] = (fresh(value), _now() + ttl)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.put(key, value, ttl)

    async def delete(self, key: str) -> None:
        self.mapping.pop(key, None)

    async def clear(self) -> None:
        self.mapping.clear()

    def statistics(self) -> StoreStatistics:
        """Size after dropping the expired entries (a pass over the mapping: statistics are
        read at collection time, not per call)."""
        now = _now()
        for key in [key for key, entry in list(self.mapping.items()) if entry[1] <= now]:
            self.mapping.pop(key, None)
        maxsize = getattr(self.mapping, "maxsize", None)
        size = len(self.mapping)
        return StoreStatistics(size, maxsize if isinstance(maxsize, int) else size, 0)

    def __repr__(self) -> str:
        return f"<MappingStore over {type(self.mapping).__qualname__} size={len(self.mapping)}>"


def store_of(store: Any, maxsize: int) -> CacheStore:
    """The store a Cache was given: an in-memory one of ``maxsize`` for None, a
    :class:`MappingStore` over a bounded mutable mapping (a cachetools cache), else a
    CacheStore."""
    if store is None:
        return MemoryStore(maxsize)
    bounded = isinstance(getattr(store, "maxsize", None), (int, float))
    if isinstance(store, MutableMapping) and bounded and not isinstance(store, CacheStore):
        return MappingStore(store)
    if not isinstance(store, CacheStore):
        raise TypeError(f"store must implement CacheStore (get/set/delete/clear) or be a bounded "
                        f"mapping with a maxsize, such as a cachetools cache, got {store!r:.80}"
                        + (" (a plain dict grows without bound: use maxsize= for the in-memory "
                           "store)" if isinstance(store, dict) else ""))
    return store
