"""RedisConcurrencyLimiter: at most ``limit`` calls in flight across every process.

Each permit is a lease: a member of a Redis ZSET scored by its expiry on the server clock. While
this process holds permits, ONE renewal task per limiter extends all of them every third of the
lease; a process that dies stops renewing, and its permits come back when the lease runs out
(``lease`` seconds at most). Waiting is a local fair :class:`ConcurrencyLimiter` (priorities,
round-robin by partition, FIFO) in front, then polling Redis with jittered exponential backoff
capped by the server's hint of when the earliest lease expires. Pub/sub wake-ups would cut the
latency of a release in another process; polling was kept because it needs no extra connection
per limiter and survives a Redis restart without resubscribing.

A Redis restart (or failover) loses the leases of calls still running. The scripts fence it:
when the restart marker a process remembers is gone, or another server instance wrote it, no
new lease is granted until a lease has passed, and meanwhile the holders' renewals put their
leases back (``_fence`` and ``_leases``); a fresh deployment, which nobody remembers, is granted
at once. So the limit holds across a restart; only ``on_error="local"`` trades it for
availability while Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from ..._admission.limiter import ConcurrencyLimiter, ConcurrencyStats
from ..._core.check import number, text
from ..._core.errors import AdmissionTimeout
from ._ratelimit import RedisBackend
from ._slots import RedisSlots

__all__ = ["RedisConcurrencyLimiter"]

#: The accepted range of ``lease`` seconds.
MIN_LEASE, MAX_LEASE = 0.1, 86_400.0


class RedisConcurrencyLimiter:
    """A distributed :class:`ConcurrencyLimiter`: use as ``ConcurrencyLimit(limiter)``.

    ``name`` identifies the shared limit (processes using the same backend prefix and name share
    it). ``lease`` seconds is how long a dead process's permits stay taken. ``max_queue`` and
    ``max_wait`` bound the local wait (QueueFull, AdmissionTimeout) like the local limiter.
    With ``on_error="local"`` a Redis outage leaves the local limiter alone in charge (``limit``
    per process; those permits are registered in Redis once it answers); with ``"fail"``
    acquire raises :class:`llmguard.BackendUnavailable`. For ``lease`` seconds after a process
    sees that Redis lost the leases (a restart, a failover) no permit is granted, so the calls
    still running re-register first; a fresh deployment is granted at once.
    """

    __slots__ = ("backend", "name", "lease", "max_wait", "_local", "_slots")

    def __init__(
        self,
        backend: RedisBackend,
        limit: int,
        *,
        name: str = "default",
        lease: float = 10.0,
        max_queue: int | None = None,
        max_wait: float | None = None,
    ) -> None:
        if not isinstance(backend, RedisBackend):
            raise TypeError(f"backend must be a RedisBackend, got {backend!r}")
        # Renewed every third of a lease: below 0.1 s that is a busy loop of renewals; above a
        # day a crashed worker's permits stay taken for ever in practice (and Redis expiry
        # times overflow long before 1e300).
        number("lease", lease, low=MIN_LEASE, low_open=False, high=MAX_LEASE, unit=" of seconds",
               hint="; how long a crashed worker's permits stay taken, e.g. lease=10")
        number("max_wait", max_wait, optional=True, unit=" of seconds",
               hint="; pass None for no bound")
        text("name", name, hint=" (the shared limit's key)")
        #: Where the leases live.
        self.backend = backend
        #: The shared limit's name (part of the Redis key).
        self.name = name
        #: Seconds a lease lasts without renewal (how long a crashed worker's permits stay taken).
        self.lease = float(lease)
        #: Local bound on waiting (the local limiter enforces it; kept here for error messages).
        self.max_wait = max_wait
        # The local fair queue: limit per process, priorities, partitions, cancellation safety.
        self._local = ConcurrencyLimiter(limit, max_queue=max_queue)
        # The shared slots: one lease each, renewed while held.
        self._slots = RedisSlots(backend.connection, name, self.lease)

    @property
    def limit(self) -> int:
        """Permits across all processes; settable (every process should use the same value)."""
        return self._local.limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._local.limit = value

    @property
    def in_flight(self) -> int:
        """Permits held by this process."""
        return self._slots.held

    @property
    def waiting(self) -> int:
        return self._local.waiting

    async def acquire(self, *, priority: int = 0, partition: Hashable = None) -> None:
        """Wait for a permit, locally (fairly) then in Redis. Cancellation-safe: a lease Redis
        may still grant after the caller stopped waiting is released."""
        loop = asyncio.get_running_loop()
        deadline = None if self.max_wait is None else loop.time() + self.max_wait
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                await self._local.acquire(priority=priority, partition=partition)
                try:
                    while True:
                        granted, delay = await self._slots.try_acquire(self.limit)
                        if granted:
                            break
                        await asyncio.sleep(delay)
                except BaseException:
                    self._local.release()
                    raise
        except TimeoutError:
            if not timeout.expired():
                raise
            raise AdmissionTimeout(
                f"waited {self.max_wait:g} s for one of {self.limit} shared concurrency slots "
                f"{self.name!r} ({self._slots.held} held here); raise max_wait or limit, or check "
                "for workers holding leases (after a Redis restart none is granted for a lease)"
            ) from None

    def release(self) -> None:
        """Give a permit back (synchronous; the Redis ZREM is written in the background)."""
        if not self._slots.held:
            raise RuntimeError("release() called more times than acquire()")
        self._local.release()
        self._slots.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()

    def statistics(self) -> ConcurrencyStats:
        """This process's view (in_flight counts the permits held here)."""
        return self._local.statistics()

    def __repr__(self) -> str:
        return (f"<RedisConcurrencyLimiter {self.name!r} limit={self.limit} held={self.in_flight} "
                f"waiting={self.waiting} lease={self.lease:g}s>")
