"""Job state in Redis, shared by every replica (the contract of :mod:`.store`).

Per job (one hash tag, so a job's keys live together): a hash with its meta and
:class:`~llmguard._runners.jobstate.Progress` fields, a list of its input lines, a hash of one
record per answered line (``HSETNX``: a line is recorded once, whichever replica answers it), a
list of webhook attempts and a stream of events (``XREAD BLOCK`` serves SSE and long polls on
any replica). Counting a record, emitting its event and completing the job happen in one Lua
script, so exactly one replica sees the job finish (and sends its webhook).

The work queue is one stream per priority class with one consumer group: each replica reads
with ``XREADGROUP``, acks a line once its record is stored, and refreshes the idle time of the
lines it is working on (``XCLAIM ... JUSTID``). A line whose replica died stays pending, idle,
and after ``reclaim_after`` seconds another replica takes it (``XAUTOCLAIM``) and, unless a
record already exists for it, sends it again: only the lines in flight at the kill can be paid
twice. Every key of a finished job expires ``ttl`` seconds after it ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from ..._runners.jobstate import Progress
from .redis_scripts import CANCEL, RECORD, START
from .store import Event, view

__all__ = ["RedisJobStore"]

_CLASSES = ("high", "normal", "low")
_GROUP = "workers"
#: The longest one blocking read waits (a longer wait is several).
BLOCK_CHUNK = 5.0
#: Socket read and connect timeout: longer than any blocking read, so only a dead Redis hits it.
SOCKET_TIMEOUT = 3 * BLOCK_CHUNK


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisJobStore:
    """Jobs in Redis at ``url`` under ``prefix`` (see the module doc)."""

    shared = True

    def __init__(self, url: str, prefix: str, *, ttl: float, reclaim_after: float) -> None:
        import redis.asyncio as aioredis

        self.ttl, self.reclaim_after = ttl, reclaim_after
        self.prefix = f"{prefix}:jobs"
        # The store owns its timeouts (redis-py's default read timeout, 5 s in recent releases,
        # would cut any longer wait): every blocking read (XREAD/XREADGROUP BLOCK) waits at most
        # BLOCK_CHUNK seconds, well inside the socket timeout, and a longer wait is a loop of them.
        self.redis = aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                             socket_connect_timeout=SOCKET_TIMEOUT)
        self._record = self.redis.register_script(RECORD)
        self._cancel = self.redis.register_script(CANCEL)
        self._start = self.redis.register_script(START)
        self._ready = False

    def _keys(self, job_id: str) -> list[str]:
        tag = f"{self.prefix}:{{{job_id}}}"
        return [f"{tag}:job", f"{tag}:rec", f"{tag}:ev", f"{tag}:lines", f"{tag}:del"]

    def _queue(self, cls: str) -> str:
        return f"{self.prefix}:queue:{cls}"

    async def _healing(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """``await command(*args, **kwargs)`` on the queues; when Redis lost the consumer groups
        (restarted without persistence, or flushed: NOGROUP), make them again and retry once."""
        import redis.exceptions

        await self._groups()
        try:
            return await command(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        self._ready = False
        await self._groups()
        return await command(*args, **kwargs)

    async def _groups(self) -> None:
        if self._ready:
            return
        import redis.exceptions

        for cls in _CLASSES:
            try:
                await self.redis.xgroup_create(self._queue(cls), _GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    async def create(self, meta: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        await self._groups()
        job, _rec, ev, lines_key, _del = self._keys(meta["id"])
        progress = Progress(total=len(lines), created=meta["created"])
        fields = {**progress.to_fields(), "id": meta["id"], "tenant": meta["tenant"],
                  "priority": str(meta.get("priority", 0)),
                  "callback_url": meta.get("callback_url") or "",
                  "metadata": json.dumps(meta.get("metadata"))}
        cls = _CLASSES[1 - max(-1, min(1, meta.get("priority", 0)))]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job, mapping=fields)
        for start in range(0, len(lines), 1000):
            pipe.rpush(lines_key, *(json.dumps(x) for x in lines[start:start + 1000]))
        pipe.xadd(ev, {"name": "progress", **progress.to_fields()})
        pipe.zadd(f"{self.prefix}:tenant:{{{meta['tenant']}}}", {meta["id"]: meta["created"]})
        for index in range(len(lines)):
            pipe.xadd(self._queue(cls), {"job": meta["id"], "index": index})
        await pipe.execute()

    async def _read(self, job_id: str) -> tuple[dict[str, str], list[Any]] | None:
        job, _r, _e, _l, deliveries = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(job)
        pipe.lrange(deliveries, 0, -1)
        raw, attempts = await pipe.execute()
        if not raw:
            return None
        return {_s(k): _s(v) for k, v in raw.items()}, [json.loads(a) for a in attempts]

    @staticmethod
    def _meta(fields: dict[str, str]) -> dict[str, Any]:
        return {"id": fields["id"], "tenant": fields["tenant"],
                "priority": int(fields.get("priority", 0)),
                "callback_url": fields.get("callback_url") or None,
                "metadata": json.loads(fields.get("metadata", "null"))}

    async def get(self, job_id: str) -> dict[str, Any] | None:
        found = await self._read(job_id)
        if found is None:
            return None
        fields, deliveries = found
        meta = self._meta(fields)
        last = await self.redis.xrevrange(self._keys(job_id)[2], count=1)
        return {**view(meta, Progress.from_fields(fields), deliveries), "_tenant": meta["tenant"],
                "_cursor": _s(last[0][0]) if last else "0", "_callback": meta["callback_url"]}

    async def list(self, tenant: str, limit: int, after: str | None) -> list[dict[str, Any]]:
        key = f"{self.prefix}:tenant:{{{tenant}}}"
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(key, after)
            if rank is None:
                return []
            start = rank + 1
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            ids = [_s(i) for i in await self.redis.zrevrange(key, start, start + limit - 1)]
            if not ids:
                break
            start += len(ids)
            for job_id in ids:
                found = await self._read(job_id)
                if found is None:  # expired: forget it here too
                    await self.redis.zrem(key, job_id)
                    start -= 1
                    continue
                if len(out) < limit:
                    out.append(view(self._meta(found[0]), Progress.from_fields(found[0]),
                                    found[1]))
        return out

    def _tasks(self, stream: Any, entries: Any) -> list[tuple[str, int, Any]]:
        out = []
        for entry_id, data in entries:
            if data:
                data = {_s(k): _s(v) for k, v in data.items()}
                out.append((data["job"], int(data["index"]), (_s(stream), _s(entry_id))))
        return out

    async def claim(self, consumer: str, block: float) -> list[tuple[str, int, Any]]:
        read = self.redis.xreadgroup
        for cls in _CLASSES:  # the highest class with waiting lines first
            got = await self._healing(read, _GROUP, consumer, {self._queue(cls): ">"}, count=1)
            for stream, entries in got or ():
                return self._tasks(stream, entries)
        got = await self._healing(read, _GROUP, consumer, {self._queue(c): ">" for c in _CLASSES},
                                  count=1, block=max(1, int(min(block, BLOCK_CHUNK) * 1000)))
        for stream, entries in got or ():
            return self._tasks(stream, entries)
        return []

    async def ack(self, job_id: str, token: Any) -> None:
        stream, entry_id = token
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, _GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()

    async def heartbeat(self, consumer: str, tokens: list[Any]) -> None:
        """Reset the idle time of the lines this replica is working on: still alive."""
        for stream, entry_id in tokens:
            await self._healing(self.redis.xclaim, stream, _GROUP, consumer, 0, [entry_id],
                                justid=True)

    async def reclaim(self, consumer: str) -> list[tuple[str, int, Any]]:
        """Lines idle longer than ``reclaim_after`` (their replica died), now ``consumer``'s."""
        idle = int(self.reclaim_after * 1000)
        for cls in _CLASSES:
            got = await self._healing(self.redis.xautoclaim, self._queue(cls), _GROUP, consumer,
                                      idle, "0-0", count=1)
            tasks = self._tasks(self._queue(cls), got[1])
            if tasks:
                return tasks
        return []

    async def line(self, job_id: str, index: int) -> dict[str, Any] | None:
        job, rec, _ev, lines, _del = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(job, ["status", "tenant", "priority"])
        pipe.hexists(rec, str(index))
        pipe.lindex(lines, index)
        (status, tenant, priority), answered, raw = await pipe.execute()
        if status is None or answered or raw is None:
            return None
        return {"status": _s(status), "tenant": _s(tenant), "priority": int(priority or 0),
                "line": json.loads(raw)}

    async def start(self, job_id: str) -> None:
        import time

        await self._start(keys=self._keys(job_id), args=[repr(time.time())])

    async def record(self, job_id: str, index: int, record: dict[str, Any]) -> str | None:
        import time

        result = await self._record(keys=self._keys(job_id), args=[
            index, json.dumps(record, default=str), int(bool(record.get("ok"))),
            repr(time.time()), max(1, int(self.ttl))])
        return None if result is None else _s(result)

    async def cancel(self, job_id: str) -> bool:
        import time

        done = await self._cancel(keys=self._keys(job_id),
                                  args=[repr(time.time()), max(1, int(self.ttl))])
        return bool(done)

    async def add_delivery(self, job_id: str, attempt: dict[str, Any]) -> None:
        key = self._keys(job_id)[4]
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(attempt))
        pipe.expire(key, max(1, int(self.ttl)))
        await pipe.execute()

    async def events(self, job_id: str, after: str, block: float) -> list[Event]:
        key = self._keys(job_id)[2]
        loop = asyncio.get_running_loop()
        until = loop.time() + block
        while True:  # a long wait is several short blocking reads (see SOCKET_TIMEOUT)
            left = until - loop.time()
            got = await self.redis.xread({key: after}, count=1000, block=max(
                1, int(min(left, BLOCK_CHUNK) * 1000)) if left > 0 else None)
            if got or left <= BLOCK_CHUNK:
                break
        out: list[Event] = []
        for _stream, entries in got or ():
            for entry_id, data in entries:
                fields = {_s(k): _s(v) for k, v in data.items()}
                progress = Progress.from_fields(fields)
                out.append((_s(entry_id), fields["name"], {"id": job_id, **progress.to_dict()}))
        return out

    async def results(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        job, rec, *_ = self._keys(job_id)
        total = int(await self.redis.hget(job, "total") or 0)
        for start in range(0, total, 500):
            fields = [str(i) for i in range(start, min(total, start + 500))]
            for raw in await self.redis.hmget(rec, fields):
                if raw is not None:
                    yield json.loads(raw)

    async def aclose(self) -> None:
        await self.redis.aclose()
