"""Cache stores: the async protocol a shared store (Redis) implements, and the in-memory store."""

from __future__ import annotations

import asyncio
import marshal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._core.public import public
from .copier import LEAVES, plan
from .stream import fresh

__all__ = ["MISSING", "CacheStore", "LocalStore", "MemoryStore", "StoreStatistics"]


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

    An in-process store may also define synchronous ``lookup(key)`` and ``put(key, value,
    ttl)`` (what ``get``/``set`` do, without a coroutine: the Cache's hit path then costs none,
    and its keys are the canonical text, not a sha256) and ``copies = True`` when it hands out
    copies no other caller holds (:class:`MemoryStore` does all three).

    A store whose ``get`` takes a fill lock on a miss (single-flight across processes) may also
    define ``abandon(key)`` (synchronous, non-blocking): the Cache calls it when a miss ends
    without a ``set`` (the call failed or was cancelled, ``cache_if`` refused the result, a
    stream ended incomplete) so the lock is released at once. A store that cannot keep entries
    beyond some ttl says so in a ``max_ttl`` attribute (seconds): the Cache refuses a longer
    ``ttl`` when it is built, instead of every write failing later.
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


#: The ``make`` of a snapshot hit once: the next hit plans its copier.
_PLAN: Any = object()


def _itself(value: Any) -> Any:
    """An immutable answer's copy: itself."""
    return value


@runtime_checkable
class LocalStore(Protocol):
    """A store in this process that answers synchronously and keeps its own copies (MemoryStore):
    Cache reads and writes it without a coroutine, skips copying answers, and keys it with plain
    text instead of a sha256 (no other process reads the keys). ``lookup(key)`` returns the
    value or :data:`MISSING`; ``put(key, value, ttl)`` stores a copy. A store whose class sets
    ``lookup_takes_now = True`` also takes ``lookup(key, now)``: the loop time to judge expiry
    by, just read by the caller."""

    def lookup(self, key: str) -> Any: ...

    def put(self, key: str, value: Any, ttl: float) -> None: ...


@public
class MemoryStore:
    """A bounded in-process store: least-recently-used eviction, per-entry expiry on loop time.

    It keeps its own copy of every value it is given and returns a new copy on every read
    (``copies`` is True), so no caller's edits reach another: an answer made of builtin types is
    kept as a marshal snapshot, loaded at C speed on its first read; from its second, a
    JSON-shaped one is copied by code made for its shape (new containers, the immutable leaves
    shared: ``copier.py``). Immutable answers (str, numbers, tuples of them) are shared as they
    are; any other is deep-copied when stored and when read (shared if it cannot be copied).
    """

    #: Stored values are snapshots, and ``get``/``lookup`` return copies no other caller holds.
    copies = True

    __slots__ = ("maxsize", "evictions", "_entries", "_expiry", "_clock")

    def __init__(self, maxsize: int = 10_000) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize <= 0:
            raise ValueError(f"maxsize must be a positive int (entries), got {maxsize!r}")
        #: Capacity bound (entries).
        self.maxsize = maxsize
        #: Entries dropped to make room (least recently used first), not counting expiries.
        self.evictions = 0
        #: key -> (make, kept, expiry time), least recently used first: a hit is ``make(kept)``
        #: (make None or _PLAN: ``kept`` is a marshal snapshot not read yet, or read once).
        self._entries: OrderedDict[Any, tuple[Any, Any, float]] = OrderedDict()
        #: (expiry time, key) in insertion order: what expires first is purged before any live
        #: entry is evicted (exact when every entry has the same ttl, as under one Cache).
        self._expiry: deque[tuple[float, Any]] = deque()
        self._clock = _Clock()

    #: ``lookup(key, now)`` takes a loop time its caller has just read (the Cache's hit path
    #: with Metrics above it times the hit anyway): one clock read a hit fewer.
    lookup_takes_now = True

    def lookup(self, key: str, now: float | None = None) -> Any:
        """Synchronous :meth:`get`: the hit path of :class:`Cache` skips a coroutine with it."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[2] <= (self._clock() if now is None else now):
            del self._entries[key]
            return MISSING
        self._entries.move_to_end(key)
        make = entry[0]
        if make is not None and make is not _PLAN:
            return make(entry[1])
        value = marshal.loads(entry[1])
        if make is None:  # a snapshot's first hit: loaded (an answer hit once costs no plan)
            self._entries[key] = (_PLAN, entry[1], entry[2])
            return value
        # Its second: its shape's copier copies it from now on (copier.py), from private parts.
        planned = plan(value)
        if planned is None:  # not JSON-shaped, or too large: loaded on every hit
            self._entries[key] = (marshal.loads, entry[1], entry[2])
            return value
        self._entries[key] = (*planned, entry[2])
        return planned[0](planned[1])

    async def get(self, key: str) -> Any:
        return self.lookup(key)

    def put(self, key: str, value: Any, ttl: float) -> None:
        """Synchronous :meth:`set`."""
        entries = self._entries
        try:  # self._clock(), written out (every miss stores): a call through __call__ less
            now = self._clock.last = asyncio.get_running_loop().time()
        except RuntimeError:
            now = self._clock.last
        expires = now + ttl
        # A snapshot (the caller may go on to edit its answer): marshal bytes when the value
        # is made of builtin types only (dicts, lists, str, numbers...: what JSON-shaped
        # answers are), until its second hit makes a copier for it (copier.py). Version 4
        # writes an ASCII str as it is (version 2 encodes each to UTF-8 first: a parsed
        # completion 11,300 -> 7,500 instructions); what is referenced twice or more (an
        # interned str, a key json.loads shared) goes as a back-reference, loaded as one
        # object, as deepcopy does. An object (a pydantic completion, a dict subclass) is
        # deep-copied. Immutable answers are shared as they are.
        if key in entries:  # a refresh: the new entry goes last, as the most recently used
            del entries[key]
        kind = type(value)
        if kind is not dict and (kind in LEAVES or (kind is tuple or kind is frozenset) and all(
                type(item) in LEAVES for item in value)):
            entries[key] = (_itself, value, expires)
        else:
            try:
                entries[key] = (None, marshal.dumps(value, 4), expires)
            except ValueError:
                entries[key] = (fresh, fresh(value), expires)
        self._expiry.append((expires, key))
        if len(entries) > self.maxsize:
            self._purge(now)
            while len(entries) > self.maxsize:
                entries.popitem(last=False)
                self.evictions += 1
        elif len(self._expiry) > 2 * self.maxsize:  # overwritten keys left stale marks
            self._purge(now)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.put(key, value, ttl)

    def _purge(self, now: float) -> None:
        """Drop expired entries (oldest first) and the expiry marks of gone or replaced ones."""
        expiry, entries = self._expiry, self._entries
        while expiry:
            expires, key = expiry[0]
            entry = entries.get(key)
            if entry is not None and entry[2] == expires:
                if expires > now:
                    break
                del entries[key]
            expiry.popleft()
        if len(expiry) > 2 * max(len(entries), 1):
            self._expiry = deque(sorted(((entry[2], key) for key, entry in entries.items()),
                                        key=lambda mark: mark[0]))

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def clear(self) -> None:
        self._entries.clear()
        self._expiry.clear()

    def statistics(self) -> StoreStatistics:
        self._purge(self._clock())
        return StoreStatistics(len(self._entries), self.maxsize, self.evictions)

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<MemoryStore size={s.size}/{s.maxsize} evictions={s.evictions}>"
