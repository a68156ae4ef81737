"""The work queue of :class:`~.redis_store.RedisJobStore`, shared by every replica.

One stream per tenant and priority class, with one consumer group each: a replica reads with
``XREADGROUP`` (the highest class with waiting lines, one line per tenant, into its
:class:`~.schedule.Schedule`, which serves them round-robin), acks a line once its record is
stored, and refreshes the idle time of the lines it holds (``XCLAIM ... JUSTID``). A line whose
replica died stays pending, idle, and after ``reclaim_after`` seconds another replica takes it
(``XAUTOCLAIM``). Redis restarted without persistence (or flushed) loses the groups: the first
command that meets NOGROUP makes them again, so jobs submitted afterwards run.

The queue owns its timeouts: a blocking read waits at most :data:`BLOCK_CHUNK` seconds, well
inside the client's socket timeout (:data:`SOCKET_TIMEOUT`; redis-py's own default, 5 s in
recent releases, would cut a longer wait), and a longer wait is a loop of them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..._core.cancel import honouring_cancel
from .schedule import Task

__all__ = ["BLOCK_CHUNK", "SOCKET_TIMEOUT", "RedisQueue", "decoded", "priority_class"]

CLASSES = {"high": 1, "normal": 0, "low": -1}
_GROUP = "workers"
#: The longest one blocking read waits (a longer wait is several).
BLOCK_CHUNK = 5.0
#: Socket read and connect timeout: longer than any blocking read, so only a dead Redis hits it.
SOCKET_TIMEOUT = 3 * BLOCK_CHUNK


def decoded(value: Any) -> str:
    """A Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def priority_class(priority: int) -> str:
    return "high" if priority > 0 else "low" if priority < 0 else "normal"


class RedisQueue:
    """The queue part of the Redis job store (see the module doc); ``tenants`` are the names
    lines can belong to (the gateway's configured tenants)."""

    def __init__(self, redis: Any, prefix: str, tenants: Collection[str],
                 reclaim_after: float) -> None:
        self.redis, self.prefix, self.reclaim_after = redis, prefix, reclaim_after
        self.tenants = tuple(tenants)
        #: stream key -> (tenant, priority), for every queue this replica reads.
        self._streams = {self.key(priority, tenant): (tenant, priority)
                         for priority in CLASSES.values() for tenant in self.tenants}
        self._ready = False

    def key(self, priority: int, tenant: str) -> str:
        return f"{self.prefix}:queue:{priority_class(priority)}:{{{tenant}}}"

    async def _healing(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """``await command(*args, **kwargs)`` on the queues; when Redis lost the consumer groups
        (NOGROUP), make them again and retry once."""
        import redis.exceptions

        await self.groups()
        try:
            return await honouring_cancel(command(*args, **kwargs))
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        self._ready = False
        await self.groups()
        return await honouring_cancel(command(*args, **kwargs))

    async def groups(self) -> None:
        """Make the consumer groups (once per process, and again after NOGROUP)."""
        if self._ready:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xgroup_create(stream, _GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result
        self._ready = True

    def _tasks(self, got: Any) -> list[Task]:
        out = []
        for stream, entries in got or ():
            tenant, priority = self._streams[decoded(stream)]
            for entry_id, data in entries:
                if data:
                    data = {decoded(k): decoded(v) for k, v in data.items()}
                    out.append(Task(data["job"], int(data["index"]),
                                    (decoded(stream), decoded(entry_id)), tenant, priority))
        return out

    async def claim(self, consumer: str, block: float,
                    skip: Collection[str] = ()) -> list[Task]:
        """One waiting line of each tenant not in ``skip``, of the highest class that has any;
        waits up to ``min(block, BLOCK_CHUNK)`` seconds for one."""
        read = self.redis.xreadgroup
        everything = {}
        for priority in CLASSES.values():  # the highest class with waiting lines first
            streams = {self.key(priority, t): ">" for t in self.tenants if t not in skip}
            if streams:
                got = self._tasks(await self._healing(read, _GROUP, consumer, streams, count=1))
                if got:
                    return got
                everything.update(streams)
        if not everything:
            return []
        return self._tasks(await self._healing(
            read, _GROUP, consumer, everything, count=1,
            block=max(1, int(min(block, BLOCK_CHUNK) * 1000))))

    async def ack(self, job_id: str, token: Any) -> None:
        stream, entry_id = token
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, _GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()

    async def heartbeat(self, consumer: str, tokens: list[Any]) -> None:
        """Reset the idle time of the lines this replica holds: still alive."""
        for stream, entry_id in tokens:
            await self._healing(self.redis.xclaim, stream, _GROUP, consumer, 0, [entry_id],
                                justid=True)

    async def reclaim(self, consumer: str) -> list[Task]:
        """Lines idle longer than ``reclaim_after`` (their replica died), now ``consumer``'s."""
        idle = int(self.reclaim_after * 1000)
        for stream in self._streams:
            got = await self._healing(self.redis.xautoclaim, stream, _GROUP, consumer, idle,
                                      "0-0", count=1)
            tasks = self._tasks([(stream, got[1])])
            if tasks:
                return tasks
        return []
