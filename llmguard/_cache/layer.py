"""The Cache layer: read-through caching with single-flight (stores live in ``_cachestore``).

Single-flight follows async-lru: the first caller of a key starts one shared task; identical
calls that arrive while it runs await it through ``asyncio.shield``, so one waiter's cancellation
never cancels the others' answer; the last waiter out cancels it; an error reaches every waiter
and nothing is cached.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .key import custom_key, default_key
from .._core.check import number, text
from .store import MISSING, CacheStore, MemoryStore
from .stream import STREAM_KEY, Tee, fresh, is_recording, replay
from .._core import events
from .._core.call import Call, Handler
from .._core.events import EventKind
from .._core.stream import Stream
from .._core.public import public

__all__ = ["Cache", "CacheStatistics", "cache_if_complete"]


def cache_if_complete(result: Any) -> bool:
    """Default ``cache_if``: skip truncated answers (``finish_reason == "length"``).

    Reads OpenAI-style results and stream chunks in dict or object form (a completed stream is
    judged by its chunks); anything else is cached.
    """
    if is_recording(result):
        return all(cache_if_complete(chunk) for chunk in result[STREAM_KEY])
    choices = result.get("choices") if isinstance(result, dict) else getattr(result, "choices", None)
    if not isinstance(choices, (list, tuple)):
        return True
    for choice in choices:
        reason = choice.get("finish_reason") if isinstance(choice, dict) else getattr(
            choice, "finish_reason", None)
        if reason == "length":
            return False
    return True


def _no_op(key: str) -> None:
    """A store without fill locks has nothing to release."""


#: Read-through mode for the current context: None (normal), "bypass" or "refresh".
_MODE: ContextVar[str | None] = ContextVar("llmguard_cache_mode", default=None)


@public
@dataclass(frozen=True, slots=True)
class CacheStatistics:
    #: Calls answered from the store.
    hits: int
    #: Calls that ran the wrapped function as the leader of a flight.
    misses: int
    #: Calls that joined a flight already running for the same key.
    coalesced: int
    #: Calls that skipped the lookup (``Cache.bypass()`` / ``Cache.refresh()``).
    bypassed: int
    #: Entries evicted to make room (from the store, when it counts them).
    evictions: int
    #: Entries in the store.
    size: int
    #: Single-flight entries running now (0 when idle: nothing leaks).
    in_flight: int
    #: Store get/set calls that raised (each handled as a miss / not cached).
    store_errors: int


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        #: Callers awaiting the task; the last to leave early cancels it.
        self.waiters = 0


@public
class Cache:
    """Cache successful results for ``ttl`` seconds; identical concurrent calls run once.

    The default key is a sha256 over the guarded function's identity and its arguments bound to
    its signature (positional, keyword and default forms of one call are one entry), leaving out
    arguments that do not change the answer (``timeout``, ``api_key``, ...). Each guarded
    function has its own entries: two closures from one factory, two agents' bound methods, or
    one decorated method on two instances never share an answer. ``namespace="..."`` makes them
    share (and makes keys of closures and methods stable across processes, for a shared Redis
    store; module-level functions are stable without it). ``key(*args, **kwargs)`` replaces the
    default key; it must return a str or a hashable value with a JSON form (a tuple of
    str/int/float). ``store`` replaces the in-memory
    store (``maxsize`` entries, LRU) with any :class:`CacheStore`. ``cache_if(result)`` decides
    per result (default :func:`cache_if_complete`). Errors and cancellations are never cached.
    Each call's outcome is ``call.record.cache``: "hit" | "miss" | "coalesced" | "bypass".
    """

    #: What a :class:`CacheStore`'s ``get`` returns for an absent or expired key.
    MISSING = MISSING

    __slots__ = ("ttl", "store", "namespace", "_key", "_cache_if", "_lookup", "_abandon", "_flights",
                 "_hits", "_misses", "_coalesced", "_bypassed", "_store_errors")

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int = 10_000,
        key: Callable[..., Hashable] | None = None,
        store: CacheStore | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        namespace: str | None = None,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"ttl must be a number of seconds, got {type(ttl).__qualname__}")
        if not ttl > 0 or math.isinf(ttl):  # `not >` also rejects NaN
            raise ValueError(f"ttl must be > 0 and finite (seconds), got {ttl!r}; e.g. ttl=300")
        number("maxsize", maxsize, integer=True, hint="; e.g. maxsize=10_000 entries")
        for name, fn in (("key", key), ("cache_if", cache_if)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable or None, got {fn!r}")
        if store is not None and not isinstance(store, CacheStore):
            raise TypeError(f"store must implement CacheStore (get/set/delete/clear), got {store!r}")
        #: Seconds a result stays fresh.
        self.ttl = float(ttl)
        #: Where results live (shared with anything else holding this store).
        self.store: CacheStore = MemoryStore(maxsize) if store is None else store
        if namespace is not None:
            text("namespace", namespace, hint="; e.g. namespace='summaries-v2', or None")
        if namespace is not None and key is not None:
            raise ValueError("pass key= or namespace=, not both: a custom key names entries itself")
        #: Functions (closures, agents' methods) under one namespace share entries, in every
        #: process; None keeps each guarded function's entries its own.
        self.namespace = namespace
        self._key = key
        self._cache_if = cache_if_complete if cache_if is None else cache_if
        # The in-memory store is read synchronously: a hit then costs no coroutine.
        self._lookup = self.store.lookup if isinstance(self.store, MemoryStore) else None
        #: The store's optional hook to release a fill lock when a miss will not be filled.
        self._abandon: Callable[[str], Any] = getattr(self.store, "abandon", None) or _no_op
        self._flights: dict[str, _Flight] = {}
        self._hits = self._misses = self._coalesced = self._bypassed = self._store_errors = 0

    def key_for(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The store key of ``fn(*args, **kwargs)`` (raises ``TypeError`` if none can be built)."""
        if self._key is None:
            return default_key(fn, args, kwargs, self.namespace)
        return custom_key(self._key, args, kwargs)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        mode = _MODE.get()
        if mode == "bypass":
            self._bypassed += 1
            call.record.cache = "bypass"
            return await call_next(call)
        key = self.key_for(call.fn, call.args, call.kwargs)
        if mode is None:
            value = self._lookup(key) if self._lookup else await self._get(key)
            if value is not MISSING:
                self._hits += 1
                call.record.cache = "hit"
                if events.subscribers:
                    call.emit(EventKind.CACHE_HIT, "cache", detail="hit")
                return await replay(value) if is_recording(value) else fresh(value)
        else:
            self._bypassed += 1
        flight = self._flights.get(key)
        if flight is None:
            if mode is None:  # a refresh is counted as bypassed, above
                self._misses += 1
            call.record.cache = "miss" if mode is None else "bypass"
            task = asyncio.ensure_future(self._fill(key, call, call_next))
            flight = self._flights[key] = _Flight(task)
        else:
            self._coalesced += 1
            call.record.cache = "coalesced"
            call.emit(EventKind.CACHE_HIT, "cache", detail="coalesced")
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            task = flight.task
            if not task.done() and flight.waiters == 1:
                # Last waiter out: nobody wants the answer any more.
                task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]
            elif task.done() and not task.cancelled() and task.exception() is None and \
                    isinstance(task.result(), Tee):
                task.result().forfeit()  # counted as a reader when the stream started
            raise
        finally:
            flight.waiters -= 1
        return await result.open() if isinstance(result, Tee) else fresh(result)

    async def _fill(self, key: str, call: Call, call_next: Handler) -> Any:
        try:
            try:
                result = await call_next(call)
            except BaseException:
                self._abandon(key)
                raise
            if isinstance(result, Stream):  # stored once read to its end, if ever
                result.defer(lambda error: error is not None and self._abandon(key))
                return Tee(result, self._flights[key].waiters,
                           lambda recording: self._store(key, recording))
            await self._store(key, result)
            return result
        finally:
            # Synchronous with the task's end, so a later call starts a fresh flight.
            flight = self._flights.get(key)
            if flight is not None and flight.task is asyncio.current_task():
                del self._flights[key]

    async def _store(self, key: str, result: Any) -> None:
        if not self._cache_if(result):
            self._abandon(key)
            return
        try:
            await self.store.set(key, result, self.ttl)
        except Exception:  # the answer matters more than caching it: see CacheStore
            self._store_errors += 1

    async def _get(self, key: str) -> Any:
        try:
            return await self.store.get(key)
        except Exception:  # a shared store being down must not fail the LLM call
            self._store_errors += 1
            return MISSING

    @staticmethod
    @contextmanager
    def bypass(*, refresh: bool = False) -> Iterator[None]:
        """Within this context every Cache skips the lookup (and coalescing) for calls made here.

        With ``refresh=True`` the fresh result is still stored (and concurrent identical
        refreshes share one call); otherwise the cache is neither read nor written.
        """
        token = _MODE.set("refresh" if refresh else "bypass")
        try:
            yield
        finally:
            _MODE.reset(token)

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
            store_errors=self._store_errors,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<Cache ttl={self.ttl:g}s size={s.size} hits={s.hits} misses={s.misses} "
                f"coalesced={s.coalesced} in_flight={s.in_flight}>")
