"""What a Cache decides per call and per result, and what it counts: the bypass mode,
``cache_if_complete`` and the statistics snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .._core.public import public
from .._core.stats import LayerStats
from .stream import STREAM_KEY

__all__ = ["MODE", "CacheStatistics", "bypassing", "cache_if_complete"]

#: Read-through mode for the current context: None (normal), "bypass" or "refresh".
MODE: ContextVar[str | None] = ContextVar("llmguard_cache_mode", default=None)


def cache_if_complete(result: Any) -> bool:
    """Default ``cache_if``: skip truncated answers (``finish_reason == "length"``).

    Reads OpenAI-style results and stream chunks in dict or object form (a completed stream is
    judged by its chunks); anything else is cached.
    """
    if type(result) is dict:  # JSON answers (every miss runs this): no ABC or helper calls
        choices = result.get("choices")
        if type(choices) is list:  # a completion: its choices' reasons, read directly
            for choice in choices:
                if type(choice) is not dict:
                    break
                if choice.get("finish_reason") == "length":
                    return False
            else:
                return True
        elif STREAM_KEY in result:  # a stored stream (``is_recording``)
            return all(cache_if_complete(chunk) for chunk in result[STREAM_KEY])
    else:
        choices = (result.get("choices") if isinstance(result, dict)
                   else getattr(result, "choices", None))
    if type(choices) is not list and not isinstance(choices, (list, tuple)):
        return True
    for choice in choices:
        reason = (choice.get("finish_reason") if type(choice) is dict or isinstance(choice, dict)
                  else getattr(choice, "finish_reason", None))
        if reason == "length":
            return False
    return True


@public
@dataclass(frozen=True, slots=True)
class CacheStatistics(LayerStats):
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


@contextmanager
def bypassing(refresh: bool) -> Iterator[None]:
    """``Cache.bypass()``: set the read-through mode of this context, and restore it."""
    token = MODE.set("refresh" if refresh else "bypass")
    try:
        yield
    finally:
        MODE.reset(token)
