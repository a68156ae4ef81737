"""The batch-job part of the job stores (see :mod:`.store`): a batch job's lines without a
record, its batch ledger, the provider's count of its finished lines, and its lines queued
online; :class:`MemoryBatchParts` for :class:`~.store.MemoryJobStore`,
:class:`RedisBatchParts` for :class:`~.redis_store.RedisJobStore`.
"""

from __future__ import annotations

import json
from typing import Any

from .redis_queue import decoded

__all__ = ["MemoryBatchParts", "RedisBatchParts"]


class MemoryBatchParts:
    """Mixed into :class:`~.store.MemoryJobStore` (its ``_jobs`` and ``_queue``)."""

    _jobs: dict[str, Any]
    _emit: Any
    _queue: Any

    async def batch(self, job_id: str) -> dict[str, Any] | None:
        """A batch job as its task needs it: status, tenant, priority, total, fallback, its
        ledger's events and ``lines``, ``(index, line)`` of the lines without a record; None
        when the job is gone."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        return {"status": job.progress.status.value, "tenant": job.meta["tenant"],
                "priority": job.meta.get("priority", 0), "total": len(job.lines),
                "fallback": job.meta.get("batch_fallback") or "batch",
                "ledger": list(job.ledger),
                "lines": [(i, json.loads(line)) for i, line in enumerate(job.lines)
                          if i not in job.records]}

    async def add_ledger(self, job_id: str, event: dict[str, Any]) -> None:
        """Keep one more event of the job's batch ledger."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.ledger.append(event)

    async def report(self, job_id: str, finished: int) -> None:
        """The provider has finished ``finished`` lines of the job (a progress event when that
        is more than it said before and the job is still running)."""
        job = self._jobs.get(job_id)
        if job is not None and finished > job.progress.reported and not job.progress.is_finished:
            job.progress.reported = finished
            await self._emit(job, "progress")

    async def requeue(self, job_id: str, indices: list[int]) -> None:
        """Queue these lines of the job as online tasks."""
        job = self._jobs.get(job_id)
        if job is not None:
            self._queue(job.meta, indices)


class RedisBatchParts:
    """Mixed into :class:`~.redis_store.RedisJobStore` (its ``redis``, keys and scripts)."""

    redis: Any
    _keys: Any
    _report: Any
    key: Any

    async def batch(self, job_id: str) -> dict[str, Any] | None:
        job, rec, _ev, lines, _del, ledger = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(job, ["status", "tenant", "priority", "batch_fallback", "total"])
        pipe.hkeys(rec)
        pipe.lrange(lines, 0, -1)
        pipe.lrange(ledger, 0, -1)
        (status, tenant, priority, fallback, total), answered, raw, events = \
            await pipe.execute()
        if status is None:
            return None
        done = {int(i) for i in answered}
        return {"status": decoded(status), "tenant": decoded(tenant),
                "priority": int(priority or 0), "total": int(total or 0),
                "fallback": decoded(fallback) if fallback else "batch",
                "ledger": [json.loads(e) for e in events],
                "lines": [(i, json.loads(line)) for i, line in enumerate(raw) if i not in done]}

    async def add_ledger(self, job_id: str, event: dict[str, Any]) -> None:
        """RPUSH, answered once Redis has it (with AOF ``appendfsync always``, on disk); an
        event after the job ended expires with the job's other keys."""
        job, *_, ledger = self._keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(ledger, json.dumps(event))
        pipe.ttl(job)
        _, ttl = await pipe.execute()
        if ttl > 0:
            await self.redis.expire(ledger, ttl)

    async def report(self, job_id: str, finished: int) -> None:
        await self._report(keys=self._keys(job_id), args=[finished])

    async def requeue(self, job_id: str, indices: list[int]) -> None:
        fields = await self.redis.hmget(self._keys(job_id)[0], ["tenant", "priority"])
        if fields[0] is None:
            return
        queue = self.key(int(fields[1] or 0), decoded(fields[0]))
        pipe = self.redis.pipeline(transaction=False)
        for index in indices:
            pipe.xadd(queue, {"job": job_id, "index": index})
        await pipe.execute()
