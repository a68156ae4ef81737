"""Job state in this process: the contract every job store keeps, and the in-memory store.

A store holds, per job: its meta (id, tenant, priority, callback_url, metadata), its
:class:`~llmguard._runners.jobstate.Progress`, its input lines, one record per answered line
(written once: a second record for the same line is dropped), its webhook delivery attempts and
an ordered log of events (``progress`` for each line, then exactly one terminal event,
``completed`` | ``failed`` | ``cancelled``). Its work queue is one queue per tenant and priority
class: ``claim`` hands out :class:`~.schedule.Task` s of the highest class with waiting lines,
at most one per tenant (the replica's :class:`~.schedule.Schedule` serves them round-robin),
skipping the tenants it is told to; ``ack(token)`` ends one. Finished jobs are forgotten
``ttl`` seconds after they end. :class:`~.redis_store.RedisJobStore` keeps the same contract across
replicas.

A batch job (``meta["mode"] == "batch"``: its lines go through the provider's batch API) queues
one task, index :data:`~.schedule.BATCH`, for the whole job; the store also keeps its batch
ledger (``ledger`` / ``add_ledger``: the events of
:class:`~llmguard._upstream.batches.ledger.StoredLedger`, durable before ``add_ledger``
returns), the provider's count of finished lines (``report``), and can queue some of its lines
as ordinary online tasks (``requeue``: ``batch_fallback = "online"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Collection
from typing import Any

from ..._runners.jobstate import TERMINAL, JobStatus, Progress
from .batch_store import MemoryBatchParts
from .schedule import BATCH, Task

__all__ = ["MemoryJobStore", "view"]

Event = tuple[str, str, dict[str, Any]]  # (cursor, name, data)


def view(meta: dict[str, Any], progress: Progress, deliveries: list[Any]) -> dict[str, Any]:
    """A job's public JSON: id, status, progress, counts, timings, webhook attempts."""
    body = {"id": meta["id"], "object": "job", **progress.to_dict(),
            "priority": meta.get("priority", 0), "metadata": meta.get("metadata"),
            "mode": meta.get("mode") or "online"}
    if body["mode"] == "batch":
        body["batch"] = {"fallback": meta.get("batch_fallback") or "batch",
                         "provider_finished": progress.reported}
    if meta.get("callback_url"):
        body["webhook"] = {"url": meta["callback_url"], "attempts": deliveries,
                           "delivered": any(a.get("ok") for a in deliveries)}
    return body


def event_data(meta: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return {"id": meta["id"], **progress.to_dict()}


class _Job:
    __slots__ = ("meta", "progress", "lines", "records", "deliveries", "events", "changed",
                 "ledger")

    def __init__(self, meta: dict[str, Any], lines: list[str]) -> None:
        self.meta, self.lines = meta, lines
        self.progress = Progress(total=len(lines), created=meta["created"])
        self.records: dict[int, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.changed = asyncio.Condition()
        self.ledger: list[dict[str, Any]] = []


class MemoryJobStore(MemoryBatchParts):
    """Jobs of this process (see the module doc for the contract)."""

    shared = False

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._jobs: dict[str, _Job] = {}
        #: priority -> tenant -> (job id, line index) waiting, FIFO.
        self._queues: dict[int, dict[str, deque[tuple[str, int]]]] = {}
        self._added = asyncio.Event()
        #: (tenant, Idempotency-Key) -> (job id, body fingerprint, loop time it expires).
        self._idempotency: dict[tuple[str, str], tuple[str, str, float]] = {}

    async def _emit(self, job: _Job, name: str) -> None:
        async with job.changed:
            job.events.append((str(len(job.events) + 1), name, event_data(job.meta, job.progress)))
            job.changed.notify_all()

    async def create(self, meta: dict[str, Any], lines: list[str]) -> None:
        """Store a new job and queue its lines (each a line as compact JSON text: a job of
        100k lines is held as its text, not as 100k dicts of dicts)."""
        self._expire()
        job = self._jobs[meta["id"]] = _Job(meta, lines)
        indices = [BATCH] if meta.get("mode") == "batch" else range(len(lines))
        self._queue(meta, indices)
        await self._emit(job, "progress")

    def _queue(self, meta: dict[str, Any], indices: Any) -> None:
        tenants = self._queues.setdefault(meta.get("priority", 0), {})
        tenants.setdefault(meta["tenant"], deque()).extend((meta["id"], i) for i in indices)
        self._added.set()

    def _live(self, job_id: str) -> _Job | None:
        self._expire()
        return self._jobs.get(job_id)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        job = self._live(job_id)
        if job is None:
            return None
        return {**view(job.meta, job.progress, list(job.deliveries)),
                "_tenant": job.meta["tenant"], "_cursor": str(len(job.events)),
                "_callback": job.meta.get("callback_url")}

    async def list(self, tenant: str, limit: int, after: str | None) -> list[dict[str, Any]]:
        """The tenant's jobs, newest first, ``limit`` of them after the job ``after``."""
        self._expire()
        mine = [j for j in reversed(self._jobs.values()) if j.meta["tenant"] == tenant]
        if after is not None:
            ids = [j.meta["id"] for j in mine]
            mine = mine[ids.index(after) + 1:] if after in ids else []
        return [view(j.meta, j.progress, j.deliveries) for j in mine[:limit]]

    async def claim(self, consumer: str, block: float,
                    skip: Collection[str] = ()) -> list[Task]:
        """One waiting line of each tenant not in ``skip``, of the highest class that has
        any; waits up to ``block`` seconds for one."""
        loop = asyncio.get_running_loop()
        until = loop.time() + block
        while True:
            for priority in sorted(self._queues, reverse=True):
                tenants = self._queues[priority]
                got = []
                for tenant in [t for t in tenants if t not in skip]:
                    job_id, index = tenants[tenant].popleft()
                    if not tenants[tenant]:
                        del tenants[tenant]
                    got.append(Task(job_id, index, None, tenant, priority))
                if not tenants:
                    del self._queues[priority]
                if got:
                    return got
            self._added.clear()
            try:  # asyncio.timeout, not wait_for: wait_for can lose a cancel on 3.11
                async with asyncio.timeout(until - loop.time()):
                    await self._added.wait()
            except TimeoutError:
                return []

    async def ack(self, job_id: str, token: Any) -> None:
        pass

    async def heartbeat(self, consumer: str, tokens: list[Any]) -> None:
        pass

    async def reclaim(self, consumer: str) -> list[tuple[str, int, Any]]:
        return []

    async def line(self, job_id: str, index: int) -> dict[str, Any] | None:
        """A task's line with its job's status, tenant and priority; None when the job is gone
        or the line already has its record."""
        job = self._jobs.get(job_id)
        if job is None or index in job.records:
            return None
        return {"status": job.progress.status.value, "tenant": job.meta["tenant"],
                "priority": job.meta.get("priority", 0), "line": json.loads(job.lines[index])}

    async def active(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running."""
        self._expire()
        return sum(1 for j in self._jobs.values()
                   if j.meta["tenant"] == tenant and j.progress.status not in TERMINAL)

    async def idempotent(self, tenant: str, key: str, fingerprint: str,
                         job_id: str) -> tuple[str, str] | None:
        """Take ``key`` of ``tenant`` for ``job_id`` (for the jobs' TTL), or, if a job took it
        already, that job's ``(id, fingerprint)``."""
        now = asyncio.get_running_loop().time()
        found = self._idempotency.get((tenant, key))
        if found is not None and found[2] > now:
            return found[0], found[1]
        for old in [k for k, v in self._idempotency.items() if v[2] <= now]:
            del self._idempotency[old]
        self._idempotency[(tenant, key)] = (job_id, fingerprint, now + self.ttl)
        return None

    async def forget_key(self, tenant: str, key: str) -> None:
        """Release ``key`` (the job it was taken for was not made)."""
        self._idempotency.pop((tenant, key), None)

    async def statuses(self, job_ids: list[str]) -> dict[str, str | None]:
        """Each job's status (None: gone), for workers watching for cancels."""
        return {i: self._jobs[i].progress.status.value if i in self._jobs else None
                for i in job_ids}

    async def start(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.progress.move(JobStatus.RUNNING, time.time()):
            await self._emit(job, "progress")

    async def record(self, job_id: str, index: int, record: dict[str, Any]) -> str | None:
        """Store a line's record (once); the terminal status if that finished the job."""
        job = self._jobs.get(job_id)
        if job is None or index in job.records:
            return None
        job.records[index] = record
        cancelled = job.progress.is_finished
        finished = job.progress.count(bool(record.get("ok")), time.time())
        if not cancelled:
            await self._emit(job, "progress")
        if finished:
            job.meta["ended"] = asyncio.get_running_loop().time()
            await self._emit(job, job.progress.status.value)
            return job.progress.status.value
        return None

    async def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or not job.progress.move(JobStatus.CANCELLED, time.time()):
            return False
        job.meta["ended"] = asyncio.get_running_loop().time()
        await self._emit(job, "cancelled")
        return True

    async def add_delivery(self, job_id: str, attempt: dict[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.deliveries.append(attempt)

    async def events(self, job_id: str, after: str, block: float) -> list[Event]:
        """Events after the cursor ``after`` ("0": from the start), waiting up to ``block`` s."""
        job = self._jobs.get(job_id)
        if job is None:
            return []
        seen = int(after.split("-")[0])
        async with job.changed:
            if len(job.events) <= seen and block > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(block):
                        await job.changed.wait_for(lambda: len(job.events) > seen)
            return job.events[seen:]

    async def results(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        job = self._jobs.get(job_id)
        for index in sorted(job.records) if job is not None else ():
            yield job.records[index]

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for job_id in [i for i, j in self._jobs.items() if j.progress.status in TERMINAL
                       and now - j.meta.get("ended", now) >= self.ttl]:
            del self._jobs[job_id]

    async def aclose(self) -> None:
        pass
