"""RedisSlots: concurrency slots counted across processes, one Redis lease per slot held.

The :class:`~llmguard.backends.SharedSlots` a ``RedisBackend`` hands out
(``concurrency_slots``): a Router deployment's ``concurrency``, and the shared half of
:class:`RedisConcurrencyLimiter`. Each slot is a lease of ``_leases`` (renewed while held, so a
dead process's slots come back within a lease). Nobody announces a slot freed in another
process: a caller polls, ``try_acquire`` naming the delay (jittered exponential backoff from
FIRST_POLL to MAX_POLL, never past the server's hint of when the earliest lease expires).
"""

from __future__ import annotations

import random

from ..._core import clock
from ._client import Connection
from ._leases import Leases

__all__ = ["FIRST_POLL", "MAX_POLL", "RedisSlots", "poll_delay"]

#: Polling delays: first, ceiling (seconds). Jitter spreads processes polling the same ZSET.
FIRST_POLL, MAX_POLL = 0.005, 0.1


def poll_delay(attempt: int, hint: float, *, rand: float) -> float:
    """Seconds before poll ``attempt`` (0-based): exponential from FIRST_POLL to MAX_POLL with
    equal jitter (``rand`` in [0, 1)), never past ``hint`` (when the earliest lease expires)."""
    return min(clock.backoff(attempt + 1, FIRST_POLL, MAX_POLL, rand, equal=True),
               max(hint, 0.0) + 0.001)


class RedisSlots:
    """The slots named ``name`` in Redis, as this process holds them (``lease`` seconds each
    without renewal). With ``on_error="local"`` a slot is granted without Redis while it
    cannot be reached (the caller's own bound then holds alone; renewal registers the slot
    once Redis answers); with ``"fail"``, ``try_acquire`` raises BackendUnavailable."""

    __slots__ = ("name", "_leases", "_misses")

    def __init__(self, connection: Connection, name: str, lease: float) -> None:
        self.name = name
        self._leases = Leases(connection, f"{connection.prefix}:cc:{{{name}}}", lease)
        self._misses = 0  # refusals in a row: the polling backoff's step

    @property
    def held(self) -> int:
        """Slots this process holds now."""
        return len(self._leases.held)

    async def try_acquire(self, limit: int) -> tuple[bool, float]:
        """One ACQUIRE: ``(True, 0.0)`` holding a slot now, else ``(False, seconds to poll
        again)``. Cancelled, a lease Redis may still grant late is released."""
        leases = self._leases
        lease = leases.new_id()
        connection = leases.connection
        if not (connection.on_error == "local" and connection.down()):
            try:
                result = await leases.try_acquire(lease, limit)
            except BaseException:
                leases.abandon(lease)
                raise
            if result is not None and not result[0]:
                delay = poll_delay(self._misses, result[1], rand=random.random())
                self._misses += 1
                return False, delay
        # Granted, or on_error="local" while Redis cannot be reached (granted here).
        self._misses = 0
        leases.hold(lease)
        return True, 0.0

    def release(self) -> None:
        """Give one slot back (synchronous; the Redis ZREM is written in the background)."""
        if not self._leases.held:
            raise RuntimeError("release() called more times than try_acquire() granted")
        self._leases.release()

    def __repr__(self) -> str:
        return f"<RedisSlots {self.name!r} held={self.held} lease={self._leases.lease:g}s>"
