"""The Cache layer: read-through caching with single-flight (stores live in ``store.py``).

Single-flight (``flight.py``): the first caller of a key runs the call inline; callers that
join wait on futures it resolves; if it is cancelled while they wait, the first of them starts
the call again in a task they share. An error reaches every caller and is not cached."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Any

from .._core import events
from .._core.call import Call
from .._core.check import number, text
from .._core.layer import NOT_NOW, Handler
from .._core.public import public
from .._core.stream import Stream
from .key import custom_key
from .keyer import Keyer
from .mapping_store import store_of
from .policy import MODE, CacheStatistics, bypassing, cache_if_complete
from .singleflight import SHARED, SingleFlight
from .store import MISSING, CacheStore, LocalStore
from .stream import STREAM_KEY, Tee, fresh, is_recording, replay

__all__ = ["Cache", "CacheStatistics", "cache_if_complete"]


@public
class Cache(SingleFlight):
    """Cache successful results for ``ttl`` seconds; identical concurrent calls run once (the
    first caller runs the call; if it is cancelled while others wait, one of them runs it again).

    The default key is a sha256 over the guarded function's identity and its arguments bound to
    its signature (positional, keyword and default forms of one call are one entry), leaving out
    arguments that do not change the answer (``timeout``, ``api_key``, ...). Each guarded
    function has its own entries: two closures from one factory, two agents' bound methods, or
    one decorated method on two instances never share an answer. ``namespace="..."`` makes them
    share (and makes keys of closures and methods stable across processes, for a shared Redis
    store; without it such keys name their process, so a shared store never serves one
    process's closure to another; module-level functions are stable either way). ``key(*args,
    **kwargs)`` replaces the default key; it must return a str or a hashable value with a JSON
    form (a tuple of str/int/float). ``store`` replaces the in-memory store (``maxsize`` entries,
    LRU) with any :class:`CacheStore` or mutable mapping (a ``cachetools`` ``LRUCache``,
    ``TTLCache``, ...). ``cache_if(result)`` decides per result (default
    :func:`cache_if_complete`); errors and cancellations are never cached. Each call's outcome is
    ``call.record.cache``: "hit" | "miss" | "coalesced" | "bypass". ``per_partition=True`` keeps
    each ``call.partition`` (a tenant, an API key) to its own entries.
    """

    #: What a :class:`CacheStore`'s ``get`` returns for an absent or expired key.
    MISSING = MISSING

    __slots__ = ("ttl", "store", "namespace", "_key", "_keyer", "_cache_if", "_lookup", "_put",
                 "_hits", "_misses", "_bypassed", "_store_errors", "per_partition", "_missed",
                 "_lookup_takes_now")

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int = 10_000,
        key: Callable[..., Hashable] | None = None,
        store: CacheStore | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        namespace: str | None = None,
        per_partition: bool = False,
    ) -> None:
        if not isinstance(per_partition, bool):
            raise TypeError(f"per_partition must be True or False, got {per_partition!r}")
        #: Entries are keyed on ``call.partition`` too.
        self.per_partition = per_partition
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"ttl must be a number of seconds, got {type(ttl).__qualname__}")
        if not ttl > 0 or math.isinf(ttl):  # `not >` also rejects NaN
            raise ValueError(f"ttl must be > 0 and finite (seconds), got {ttl!r}; e.g. ttl=300")
        number("maxsize", maxsize, integer=True, hint="; e.g. maxsize=10_000 entries")
        for name, fn in (("key", key), ("cache_if", cache_if)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable or None, got {fn!r}")
        #: Seconds a result stays fresh.
        self.ttl = float(ttl)
        #: Where results live (shared with anything else holding this store).
        self.store: CacheStore = store_of(store, maxsize)
        if ttl > (most := getattr(self.store, "max_ttl", math.inf)):  # Redis: ms in 64 bits
            raise ValueError(f"ttl must be at most {most:g} seconds with "
                             f"{type(self.store).__name__}, got {ttl!r}; e.g. ttl=300")
        if namespace is not None:
            text("namespace", namespace, hint="; e.g. namespace='summaries-v2', or None")
        if namespace is not None and key is not None:
            raise ValueError("pass key= or namespace=, not both: a custom key names entries itself")
        #: Functions (closures, agents' methods) under one namespace share entries, in every
        #: process; None keeps each guarded function's entries its own.
        self.namespace = namespace
        self._key = key
        self._cache_if = cache_if_complete if cache_if is None else cache_if
        local = isinstance(self.store, LocalStore)  # synchronous: a hit costs no coroutine
        self._lookup, self._put = (self.store.lookup, self.store.put) if local else (None, None)
        self._lookup_takes_now = local and getattr(self.store, "lookup_takes_now", False) is True
        # A store that copies what it is given and hands out new ones: no copy here.
        super().__init__(getattr(self.store, "abandon", None),
                         local and getattr(self.store, "copies", False) is True)
        # Only a store shared across processes needs the sha256; in memory the text will do.
        # (Its bound method: calling an instance goes through ``__call__``'s slot, dearer.)
        self._keyer = Keyer(namespace, hashed=not local).__call__
        self._hits = self._misses = self._bypassed = self._store_errors = 0
        #: (kwargs, fn, key) of the miss answer_now just found, for __call__ to take.
        self._missed: tuple[Any, ...] | None = None

    def key_for(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The store key of ``fn(*args, **kwargs)`` (raises ``TypeError`` if none can be built)."""
        if self._key is None:
            return self._keyer(fn, args, kwargs)
        return custom_key(self._key, args, kwargs)

    @property
    def answers_now(self) -> bool:
        """True with an in-process store: a hit is answered synchronously (:meth:`answer_now`)."""
        return self._lookup is not None

    def answer_now(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   now: float | None = None) -> Any:
        """The hit of ``fn(*args, **kwargs)``, counted as :meth:`__call__` counts one, or
        ``NOT_NOW`` (a miss, a stored stream, a bypass): then the call goes through
        ``__call__``. The guarded function asks this first (``AnswersNow``), so a hit costs
        no ``Call`` and no coroutine; it does so only when nobody would see the call's record
        or its event, and no layer above the cache has anything to do for it but count."""
        if MODE.get() is not None or self._lookup is None:
            return NOT_NOW
        try:
            key = (self._keyer(fn, args, kwargs) if self._key is None
                   else custom_key(self._key, args, kwargs))
        except Exception:  # raised again by __call__, where the layers above see it
            return NOT_NOW
        if self.per_partition:  # no layer above has set call.partition on this path
            key = f"{key}@None"
        value = (self._lookup(key) if now is None or not self._lookup_takes_now
                 else self._lookup(key, now))
        if value is MISSING:
            # The call comes to __call__ next, in this same step of this task (only layers
            # that count run in between): it takes the key and the miss from here.
            self._missed = (kwargs, fn, key)
            return NOT_NOW
        if type(value) is dict and STREAM_KEY in value:  # a stream replays asynchronously
            return NOT_NOW
        self._hits += 1
        return value if self._copies else fresh(value)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        missed, self._missed = self._missed, None
        if missed is not None and missed[0] is call.kwargs and missed[1] is call.fn:
            # answer_now looked this very call up just now (its kwargs dict is this call's
            # own), with no mode set, in this step: a miss (only counting layers ran since)
            key, mode = missed[2], None
        else:
            mode = MODE.get()
            if mode == "bypass":
                self._bypassed += 1
                call.record.cache = "bypass"
                return await call_next(call)
            key = (self._keyer(call.fn, call.args, call.kwargs) if self._key is None
                   else custom_key(self._key, call.args, call.kwargs))
            if self.per_partition:
                key = f"{key}@{call.partition!s}"
            if mode is not None:
                self._bypassed += 1
            elif (value := self._lookup(key) if self._lookup else await self._get(key)
                  ) is not MISSING:
                self._hits += 1
                call.record.cache = "hit"
                if events.subscribers:
                    call.emit(events.EventKind.CACHE_HIT, "cache", detail="hit")
                if is_recording(value):
                    return await replay(value)
                return value if self._copies else fresh(value)
        flight = self._flights.get(key)
        if flight is not None:  # a Flight, or the record of a first caller nobody joined yet
            return await self._join(key, call, call_next, flight)
        if mode is None:  # a refresh is counted as bypassed, above
            self._misses += 1
        record = call.record
        record.cache = "miss" if mode is None else "bypass"
        self._flights[key] = record  # runs in this frame; a Flight once a caller joins
        try:
            result = await call_next(call)
        except BaseException as exc:
            self._fell(key, record, exc)
            raise
        flights = self._flights
        if flights.get(key) is record and self._put is not None and (
                type(result) is dict or not isinstance(result, Stream)):
            del flights[key]  # nobody joined (most misses), the store is here: nothing to hand
            kept = self._keep(key, result, record.fallback is not None)
            return result if not kept or self._copies else fresh(result)
        value = self._answered(key, record, result, record.fallback is not None)
        if value is SHARED:
            return await self._shared(key, record, result)
        return await value.open() if type(value) is Tee else value

    def _keep(self, key: str, result: Any, degraded: bool) -> bool | None:
        """Store ``result`` in an in-process store unless ``degraded`` or ``cache_if`` refuses
        it: True if given to it, False if not; None: await a shared store's :meth:`_set`."""
        try:
            if degraded or not self._cache_if(result):
                self._abandon(key)
                return False
        except BaseException:  # ``cache_if`` raised: the call fails, its key's fill given up
            self._abandon(key)
            raise
        if self._put is None:
            return None
        try:
            self._put(key, result, self.ttl)
        except Exception:  # the answer matters more than caching it: see CacheStore
            self._store_errors += 1
        return True

    async def _set(self, key: str, result: Any) -> bool:
        try:
            await self.store.set(key, result, self.ttl)
        except Exception:  # the answer matters more than caching it: see CacheStore
            self._store_errors += 1
        return True

    async def _get(self, key: str) -> Any:
        try:
            return await self.store.get(key)
        except Exception:  # a shared store being down must not fail the LLM call
            self._store_errors += 1
            return MISSING

    @staticmethod
    def bypass(*, refresh: bool = False) -> AbstractContextManager[None]:
        """Every Cache skips the lookup (and coalescing) for calls made in this context; with
        ``refresh=True`` the fresh result is still stored (identical refreshes share one call)."""
        return bypassing(refresh)

    async def invalidate(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Drop the entry ``fn(*args, **kwargs)`` would hit (``fn`` is the undecorated function
        or the guarded one; pass ``self`` first for a method)."""
        await self.store.delete(self.key_for(getattr(fn, "__wrapped__", fn), args, kwargs))

    async def clear(self) -> None:
        """Drop every stored entry (running flights finish and store their result)."""
        await self.store.clear()

    def statistics(self) -> CacheStatistics:
        store = self.store.statistics()
        return CacheStatistics(
            hits=self._hits, misses=self._misses, coalesced=self._coalesced,
            bypassed=self._bypassed, evictions=getattr(store, "evictions", 0),
            size=getattr(store, "size", 0), in_flight=len(self._flights),
            store_errors=self._store_errors)

    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<Cache ttl={self.ttl:g}s size={s.size} hits={s.hits} misses={s.misses} "
                f"coalesced={s.coalesced} in_flight={s.in_flight}>")
