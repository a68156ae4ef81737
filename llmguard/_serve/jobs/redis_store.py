"""Job state in Redis, shared by every replica (the contract of :mod:`.store`).

Per job (one hash tag, so a job's keys live together): a hash with its meta and
:class:`~llmguard._runners.jobstate.Progress` fields, a list of its input lines, a hash of one
record per answered line (``HSETNX``: a line is recorded once, whichever replica answers it), a
list of webhook attempts and a stream of events (``XREAD BLOCK`` serves SSE and long polls on
any replica). Counting a record, emitting its event and completing the job happen in one Lua
script, so exactly one replica sees the job finish (and sends its webhook).

The work queue (:mod:`.redis_queue`) is one stream per tenant and priority class. A line whose
replica died is taken over by another and, unless a record already exists for it, sent again:
only the lines in flight at the kill can be paid
twice. Every key of a finished job expires ``ttl`` seconds after it ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection
from typing import Any

from ..._core.cancel import honouring_cancel
from ..._runners.jobstate import Progress
from .batch_store import RedisBatchParts
from .redis_queue import BLOCK_CHUNK, SOCKET_TIMEOUT, RedisQueue, decoded
from .redis_scripts import CANCEL, RECORD, REPORT, START
from .schedule import BATCH
from .store import Event, view

__all__ = ["RedisJobStore"]

class RedisJobStore(RedisBatchParts, RedisQueue):
    """Jobs in Redis at ``url`` under ``prefix`` (see the module doc) of the tenants named
    ``tenants``; the queue's methods come from :class:`~.redis_queue.RedisQueue`."""

    shared = True

    def __init__(self, url: str, prefix: str, *, ttl: float, reclaim_after: float,
                 tenants: Collection[str]) -> None:
        import redis.asyncio as aioredis

        self.ttl = ttl
        # Timeouts of our own (see redis_queue): blocking reads wait BLOCK_CHUNK at most.
        client = aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                         socket_connect_timeout=SOCKET_TIMEOUT)
        super().__init__(client, f"{prefix}:jobs", tenants, reclaim_after)
        self._record = self.redis.register_script(RECORD)
        self._cancel = self.redis.register_script(CANCEL)
        self._start = self.redis.register_script(START)
        self._report = self.redis.register_script(REPORT)

    def _keys(self, job_id: str) -> list[str]:
        tag = f"{self.prefix}:{{{job_id}}}"
        return [f"{tag}:job", f"{tag}:rec", f"{tag}:ev", f"{tag}:lines", f"{tag}:del",
                f"{tag}:ledger"]

    async def create(self, meta: dict[str, Any], lines: list[str]) -> None:
        await self.groups()
        job, _rec, ev, lines_key, *_ = self._keys(meta["id"])
        progress = Progress(total=len(lines), created=meta["created"])
        fields = {**progress.to_fields(), "id": meta["id"], "tenant": meta["tenant"],
                  "priority": str(meta.get("priority", 0)),
                  "callback_url": meta.get("callback_url") or "",
                  "metadata": json.dumps(meta.get("metadata")),
                  "mode": meta.get("mode") or "online",
                  "batch_fallback": meta.get("batch_fallback") or ""}
        queue = self.key(meta.get("priority", 0), meta["tenant"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job, mapping=fields)
        for start in range(0, len(lines), 1000):
            pipe.rpush(lines_key, *lines[start:start + 1000])
        pipe.xadd(ev, {"name": "progress", **progress.to_fields()})
        pipe.zadd(f"{self.prefix}:tenant:{{{meta['tenant']}}}", {meta["id"]: meta["created"]})
        pipe.zadd(self._active(meta["tenant"]), {meta["id"]: meta["created"]})
        for index in [BATCH] if meta.get("mode") == "batch" else range(len(lines)):
            pipe.xadd(queue, {"job": meta["id"], "index": index})
        await pipe.execute()

    async def _read(self, job_id: str) -> tuple[dict[str, str], list[Any]] | None:
        job, _r, _e, _l, deliveries, _ledger = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(job)
        pipe.lrange(deliveries, 0, -1)
        raw, attempts = await pipe.execute()
        if not raw:
            return None
        return {decoded(k): decoded(v) for k, v in raw.items()}, [json.loads(a) for a in attempts]

    @staticmethod
    def _meta(fields: dict[str, str]) -> dict[str, Any]:
        return {"id": fields["id"], "tenant": fields["tenant"],
                "priority": int(fields.get("priority", 0)),
                "callback_url": fields.get("callback_url") or None,
                "metadata": json.loads(fields.get("metadata", "null")),
                "mode": fields.get("mode") or "online",
                "batch_fallback": fields.get("batch_fallback") or None}

    async def get(self, job_id: str) -> dict[str, Any] | None:
        found = await self._read(job_id)
        if found is None:
            return None
        fields, deliveries = found
        meta = self._meta(fields)
        last = await self.redis.xrevrange(self._keys(job_id)[2], count=1)
        return {**view(meta, Progress.from_fields(fields), deliveries), "_tenant": meta["tenant"],
                "_cursor": decoded(last[0][0]) if last else "0", "_callback": meta["callback_url"]}

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
            ids = [decoded(i) for i in await self.redis.zrevrange(key, start, start + limit - 1)]
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

    def _active(self, tenant: str) -> str:
        return f"{self.prefix}:active:{{{tenant}}}"

    async def active(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running (ended ones leave the set of
        its active jobs here, lazily)."""
        key = self._active(tenant)
        ids = [decoded(i) for i in await self.redis.zrange(key, 0, -1)]
        ended = [i for i, status in (await self.statuses(ids)).items()
                 if status in (None, "completed", "failed", "cancelled")]
        if ended:
            await self.redis.zrem(key, *ended)
        return len(ids) - len(ended)

    async def idempotent(self, tenant: str, key: str, fingerprint: str,
                         job_id: str) -> tuple[str, str] | None:
        """Take ``key`` of ``tenant`` for ``job_id`` (for the jobs' TTL, on every replica at
        once: SET NX), or, if a job took it already, that job's ``(id, fingerprint)``."""
        name = self._idempotency(tenant, key)
        mine = json.dumps([job_id, fingerprint])
        if await self.redis.set(name, mine, nx=True, ex=max(1, int(self.ttl))):
            return None
        found = await self.redis.get(name)
        if found is None:  # expired between the two commands: take it now
            return await self.idempotent(tenant, key, fingerprint, job_id)
        job, print_ = json.loads(found)
        return job, print_

    async def forget_key(self, tenant: str, key: str) -> None:
        await self.redis.delete(self._idempotency(tenant, key))

    def _idempotency(self, tenant: str, key: str) -> str:
        import hashlib

        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.prefix}:idempotency:{{{tenant}}}:{digest}"

    async def statuses(self, job_ids: list[str]) -> dict[str, str | None]:
        """Each job's status (None: gone), for workers watching for cancels."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._keys(job_id)[0], "status")
        return {i: None if v is None else decoded(v)
                for i, v in zip(job_ids, await pipe.execute(), strict=True)}

    async def line(self, job_id: str, index: int) -> dict[str, Any] | None:
        job, rec, _ev, lines, *_ = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(job, ["status", "tenant", "priority"])
        pipe.hexists(rec, str(index))
        pipe.lindex(lines, index)
        (status, tenant, priority), answered, raw = await pipe.execute()
        if status is None or answered or raw is None:
            return None
        return {"status": decoded(status), "tenant": decoded(tenant), "priority": int(priority or 0),
                "line": json.loads(raw)}

    async def start(self, job_id: str) -> None:
        import time

        await self._start(keys=self._keys(job_id), args=[repr(time.time())])

    async def record(self, job_id: str, index: int, record: dict[str, Any]) -> str | None:
        import time

        result = await self._record(keys=self._keys(job_id), args=[
            index, json.dumps(record, default=str), int(bool(record.get("ok"))),
            repr(time.time()), max(1, int(self.ttl))])
        return None if result is None else decoded(result)

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
            got = await honouring_cancel(self.redis.xread({key: after}, count=1000, block=max(
                1, int(min(left, BLOCK_CHUNK) * 1000)) if left > 0 else None))
            if got or left <= BLOCK_CHUNK:
                break
        out: list[Event] = []
        for _stream, entries in got or ():
            for entry_id, data in entries:
                fields = {decoded(k): decoded(v) for k, v in data.items()}
                progress = Progress.from_fields(fields)
                out.append((decoded(entry_id), fields["name"], {"id": job_id, **progress.to_dict()}))
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
