"""The ``Limiter`` protocol a ``ConcurrencyLimit`` drives, and the snapshot of the in-process one."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._core.public import public
from .._core.stats import LayerStats

__all__ = ["ConcurrencyStats", "Limiter", "SharedSlots", "SlotBackend"]


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


@public
class SharedSlots(Protocol):
    """Concurrency slots counted across processes under one name: what a
    :class:`~llmguard.Deployment`'s ``concurrency`` takes when its Router's backend is a
    :class:`SlotBackend` (``llmguard.backends.redis.RedisBackend``). The contract:

    * ``await try_acquire(limit)`` asks once and never waits for room: ``(True, 0.0)`` when
      this process now holds one more of the ``limit`` slots (counted over every process using
      the name), else ``(False, seconds)`` with nothing held, ``seconds`` being how long to wait
      before asking again (a slot freed in another process is not announced: the caller polls,
      and the delay grows while the slots stay full). Cancelled, it holds nothing.
    * ``release()`` is synchronous (it runs on cancellation paths) and gives back one slot that
      ``try_acquire`` granted.
    * A slot held by a process that dies comes back by itself (a lease that expires).
    * ``held``: the slots this process holds now.
    """

    @property
    def held(self) -> int: ...

    async def try_acquire(self, limit: int) -> tuple[bool, float]: ...

    def release(self) -> None: ...


@public
@runtime_checkable
class SlotBackend(Protocol):
    """A backend that can hold concurrency slots shared across processes:
    ``concurrency_slots(name)`` returns the :class:`SharedSlots` of ``name`` (a new object per
    call; every process asking for ``name`` of the same store shares the count)."""

    def concurrency_slots(self, name: str) -> SharedSlots: ...
