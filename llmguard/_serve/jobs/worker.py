"""Runs job lines: takes them off the store's queue and answers each through the gateway.

Each line goes through the same path as a ``POST /v1/chat/completions`` of its tenant (the
tenant's quota and concurrency cap, then the model's layers). Claimed lines wait in this
replica's :class:`~.schedule.Schedule`: by priority, then round-robin across tenants. A line
refused by its tenant's own quota is put aside until the quota has room and tried again (a job
is the tenant's backlog, not a burst to refuse), while the workers serve other tenants: none
sleeps on a quota. Any other failure becomes that line's error record, as in ``llmguard run``.

A cancel reaches every line of the job that was not sent yet: lines still queued or put aside
are dropped when their turn comes, and lines waiting inside the gateway (the model's queue) are
abandoned (the cancel is seen at once on this replica, within :data:`WATCH_EVERY` seconds on
the others). A line already sent is answered and its answer dropped: the provider charged it.
When a record completes its job, this replica sends the webhook.

A batch job's one task (:data:`~.schedule.BATCH`) runs :class:`~.batch.BatchJob` in a task of
its own (it polls the provider for hours, holding no worker), kept claimed by the heartbeat
like a line in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

import llmguard as lg

from ..._runners.record import describe, make_record
from ..abandon import Abandon, Abandoned
from ..errors import Redactor
from ..tenants import QuotaExceeded, TenantBusy
from .batch import BatchJob
from .schedule import BATCH, Schedule, Task

__all__ = ["JobRunner"]

log = logging.getLogger("llmguard.serve.jobs")
#: How long one line waits, in all, for its tenant's quota before it is recorded as refused.
QUOTA_PATIENCE = 600.0
#: How often the jobs of running lines are checked for a cancel made on another replica.
WATCH_EVERY = 0.5
_ENDED = ("cancelled", "failed", "completed", None)


class _Later(Exception):
    """The tenant's quota refused the line: try again in ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        self.wait = wait


class JobRunner:
    """``concurrency`` workers over ``store`` for ``gateway``; ``notify(job_id)`` is awaited
    (in the background) when a job this replica finished needs its webhook."""

    def __init__(self, gateway: Any, store: Any, concurrency: int, notify: Any) -> None:
        self.gateway, self.store, self.concurrency = gateway, store, concurrency
        self.notify = notify
        self.consumer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.redact = Redactor(gateway.secrets())
        caps = {t.name: t.config.concurrency for t in gateway.tenants.by_name.values()
                if t.config.concurrency}
        self.schedule = Schedule(caps)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: job id -> the cancel signals (``fire()``) of its lines and batch task running here.
        self._running: dict[str, set[Abandon | BatchJob]] = {}
        self._in_flight: dict[Any, str] = {}
        self._stopping = False

    def start(self) -> None:
        for i in range(self.concurrency):
            self._spawn(self._loop(), f"llmguard-jobs-worker-{i}")
        self._spawn(self._watch(), "llmguard-jobs-watch")
        if self.store.shared:
            self._spawn(self._keeper(), "llmguard-jobs-keeper")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancelled(self, job_id: str) -> None:
        """Job ``job_id`` was cancelled: abandon its lines not sent yet."""
        for abandon in list(self._running.get(job_id, ())):
            abandon.fire()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping and not self.gateway.draining:
            try:
                now = loop.time()
                task = self.schedule.next(now)
                if task is None:
                    due = self.schedule.next_due()
                    block = 1.0 if due is None else min(1.0, max(0.01, due - now))
                    for claimed in await self.store.claim(self.consumer, block,
                                                          self.schedule.paused(now)):
                        self.schedule.add(claimed)
                    continue
                try:
                    await self._one(task)
                finally:
                    self.schedule.done(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end the worker
                log.warning("jobs worker: %s", self.redact(f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(1.0)

    async def _watch(self) -> None:
        """Sees cancels made on other replicas (and jobs gone) for the lines running here."""
        while not self._stopping:
            await asyncio.sleep(WATCH_EVERY)
            if not self._running:
                continue
            try:
                for job_id, status in (await self.store.statuses(list(self._running))).items():
                    if status in _ENDED and status != "completed":
                        self.cancelled(job_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("jobs watch: %s", self.redact(f"{type(exc).__name__}: {exc}"))

    async def _keeper(self) -> None:
        """Keeps this replica's lines claimed, and takes over lines of replicas that died."""
        every = max(0.05, self.store.reclaim_after / 3)
        while not self._stopping and not self.gateway.draining:
            await asyncio.sleep(every)
            try:
                await self.store.heartbeat(self.consumer,
                                           [*self._in_flight, *self.schedule.tokens()])
                if len(self._in_flight) < self.concurrency:
                    for task in await self.store.reclaim(self.consumer):
                        self.schedule.add(task)
            except Exception as exc:  # noqa: BLE001
                log.warning("jobs keeper: %s", self.redact(f"{type(exc).__name__}: {exc}"))

    def finished(self, job_id: str) -> None:
        """A record of this replica completed job ``job_id``: send its webhook."""
        self._spawn(self.notify(job_id), f"llmguard-jobs-webhook-{job_id}")

    async def _batch(self, task: Task) -> None:
        """A batch job's task (see the module doc); acked once the job needs it no more."""
        job = BatchJob(self, task.job_id)
        self._running.setdefault(task.job_id, set()).add(job)
        if task.token is not None:
            self._in_flight[task.token] = task.job_id
        try:
            await job.run()
        finally:
            self._in_flight.pop(task.token, None)
            signals = self._running[task.job_id]
            signals.discard(job)
            if not signals:
                del self._running[task.job_id]
        await self.store.ack(task.job_id, task.token)

    async def _one(self, task: Task) -> None:
        job_id, index, token = task.job_id, task.index, task.token
        if index == BATCH:
            self._spawn(self._batch(task), f"llmguard-jobs-batch-{job_id}")
            return
        found = await self.store.line(job_id, index)
        if found is None or found["status"] in _ENDED:
            await self.store.ack(job_id, token)  # gone, answered already, or cancelled
            return
        abandon = Abandon()
        self._running.setdefault(job_id, set()).add(abandon)
        if token is not None:
            self._in_flight[token] = job_id
        loop = asyncio.get_running_loop()
        try:
            await self.store.start(job_id)
            result = await self._answer(found["tenant"], found["priority"], found["line"],
                                        abandon, task.since or loop.time())
        except _Later as later:  # its tenant's quota: aside, and the worker moves on
            self.schedule.defer(task._replace(since=task.since or loop.time()),
                                loop.time() + later.wait)
            return
        except Abandoned:  # cancelled before it was sent: nothing to record
            await self.store.ack(job_id, token)
            return
        finally:
            self._in_flight.pop(token, None)
            lines = self._running[job_id]
            lines.discard(abandon)
            if not lines:
                del self._running[job_id]
        finished = await self.store.record(job_id, index, result)
        await self.store.ack(job_id, token)
        if finished:
            self.finished(job_id)

    async def _answer(self, tenant_name: str, priority: int, line: dict[str, Any],
                      abandon: Abandon, since: float) -> dict:
        if line.get("request") is None:
            return self._record(line, error={"kind": "invalid_input", "type": "InvalidInput",
                                             "message": line.get("problem", "")})
        tenant = self.gateway.tenants.by_name.get(tenant_name)
        name = line["request"].get("model")
        model = None if tenant is None else self.gateway.model_for(tenant, name)
        if model is None:
            return self._record(line, requested=name, error={
                "kind": "bad_request", "type": "ModelNotFound",
                "message": f"The model {name!r} does not exist or you do not have access to it."})
        loop = asyncio.get_running_loop()
        call = self.gateway.start(model, tenant, dict(line["request"]), priority)
        try:
            response = await self.gateway.run(model, call, abandon=abandon)
        except (QuotaExceeded, TenantBusy) as exc:
            wait = float(getattr(exc, "headers", {}).get("retry-after-ms", 1000)) / 1000
            if loop.time() + wait > since + QUOTA_PATIENCE:
                return self._failed(line, name, exc, call, loop.time() - since)
            raise _Later(wait) from None
        except Abandoned:
            raise
        except Exception as exc:  # noqa: BLE001 - one line's failure is its record
            self.gateway.usage.record(tenant, name, 500)
            return self._failed(line, name, exc, call, loop.time() - since)
        usage = lg.extract_usage(response)
        price = (model.config.price_input, model.config.price_output)
        self.gateway.usage.record(tenant, name, 200, usage, price)
        cost = None
        if usage is not None:
            cost = round((usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1e6,
                         10)
        return self._record(line, response=response, done=call.record, requested=name,
                            elapsed=loop.time() - since, cost=cost,
                            cache=model.config.stack.cache_ttl is not None)

    @staticmethod
    def _record(line: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return make_record(line["id"], line["line"], line.get("metadata"), **fields)

    def _failed(self, line: dict[str, Any], model: str, exc: Exception, call: lg.Call,
                elapsed: float) -> dict:
        error = describe(exc)
        error["message"] = self.redact(error["message"])  # the gateway's keys too
        return self._record(line, requested=model, elapsed=elapsed, error=error,
                            done=call.record)

    async def aclose(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
