"""The ``Limiter`` protocol a ``ConcurrencyLimit`` drives, and the snapshot of the in-process one."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._core.public import public
from .._core.stats import LayerStats

__all__ = ["ConcurrencyStats", "Limiter"]


@public
@dataclass(frozen=True, slots=True)
class ConcurrencyStats(LayerStats):
    """A snapshot of a :class:`ConcurrencyLimiter`."""

    limit: int
    in_flight: int
    waiting: int
    #: Waiting calls per priority class, highest priority first.
    waiting_by_priority: Mapping[int, int]
    admitted: int
    rejected: int
    timed_out: int


@public
@runtime_checkable
class Limiter(Protocol):
    """What a :class:`~llmguard.ConcurrencyLimit` layer drives: permits, taken and given back.

    Implement it to hold permits elsewhere (``llmguard.backends.redis.RedisConcurrencyLimiter``
    holds them in Redis). The contract:

    * ``await acquire(priority=, partition=)`` returns once the caller holds one permit. Higher
      ``priority`` is served first; ``partition`` (a hashable, e.g. a tenant) is a fairness class.
      It may raise an :class:`~llmguard.AdmissionError` (``QueueFull``, ``AdmissionTimeout``) and
      then holds nothing. If the caller is cancelled while waiting it holds nothing either: a
      permit granted in the meantime is passed on, never lost.
    * ``release()`` is synchronous (it runs on cancellation paths, which must not block) and gives
      back one permit taken by ``acquire``.
    * ``statistics()`` returns a snapshot (any object; ``Guarded.stats()`` shows it).
    * ``in_flight`` and ``limit`` (ints) are read by metrics gauges and adaptive concurrency.
    """

    @property
    def limit(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    async def acquire(self, *, priority: int = 0, partition: Hashable = None) -> None: ...

    def release(self) -> None: ...

    def statistics(self) -> Any: ...
