"""Runs job lines: takes them off the store's queue and answers each through the gateway.

Each line goes through the same path as a ``POST /v1/chat/completions`` of its tenant (the
tenant's quota and concurrency cap, then the model's layers). A line refused by the tenant's
own quota waits for it and tries again (a job is the tenant's backlog, not a burst to refuse);
any other failure becomes that line's error record, as in ``llmguard run``. Lines of a
cancelled job are dropped unsent; a line already sent is answered and recorded (the provider
has charged it). When a record completes its job, this replica sends the webhook.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

import llmguard as lg

from ..._runners.record import describe, make_record
from ..errors import Redactor
from ..tenants import QuotaExceeded, TenantBusy

__all__ = ["JobRunner"]

log = logging.getLogger("llmguard.serve.jobs")
#: How long one line waits, in all, for its tenant's quota before it is recorded as refused.
QUOTA_PATIENCE = 600.0


class JobRunner:
    """``concurrency`` workers over ``store`` for ``gateway``; ``notify(job_id)`` is awaited
    (in the background) when a job this replica finished needs its webhook."""

    def __init__(self, gateway: Any, store: Any, concurrency: int, notify: Any) -> None:
        self.gateway, self.store, self.concurrency = gateway, store, concurrency
        self.notify = notify
        self.consumer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.redact = Redactor(gateway.secrets())
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight: dict[Any, str] = {}
        self._stopping = False

    def start(self) -> None:
        for i in range(self.concurrency):
            self._spawn(self._loop(), f"llmguard-jobs-worker-{i}")
        if self.store.shared:
            self._spawn(self._keeper(), "llmguard-jobs-keeper")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _loop(self) -> None:
        while not self._stopping and not self.gateway.draining:
            try:
                tasks = await self.store.claim(self.consumer, 1.0)
                for job_id, index, token in tasks:
                    await self._one(job_id, index, token)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end the worker
                log.warning("jobs worker: %s", self.redact(f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(1.0)

    async def _keeper(self) -> None:
        """Keeps this replica's lines claimed, and takes over lines of replicas that died."""
        every = max(0.05, self.store.reclaim_after / 3)
        while not self._stopping and not self.gateway.draining:
            await asyncio.sleep(every)
            try:
                await self.store.heartbeat(self.consumer, list(self._in_flight))
                if len(self._in_flight) < self.concurrency:
                    for job_id, index, token in await self.store.reclaim(self.consumer):
                        self._spawn(self._one(job_id, index, token), "llmguard-jobs-reclaimed")
            except Exception as exc:  # noqa: BLE001
                log.warning("jobs keeper: %s", self.redact(f"{type(exc).__name__}: {exc}"))

    async def _one(self, job_id: str, index: int, token: Any) -> None:
        task = await self.store.line(job_id, index)
        if task is None or task["status"] in ("cancelled", "failed", "completed"):
            await self.store.ack(job_id, token)  # gone, answered already, or cancelled
            return
        if token is not None:
            self._in_flight[token] = job_id
        try:
            await self.store.start(job_id)
            result = await self._answer(task["tenant"], task["priority"], task["line"])
            finished = await self.store.record(job_id, index, result)
            await self.store.ack(job_id, token)
        finally:
            self._in_flight.pop(token, None)
        if finished:
            self._spawn(self.notify(job_id), f"llmguard-jobs-webhook-{job_id}")

    async def _answer(self, tenant_name: str, priority: int, line: dict[str, Any]) -> dict:
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
        start = loop.time()
        give_up = start + QUOTA_PATIENCE
        while True:
            call = self.gateway.start(model, tenant, dict(line["request"]), priority)
            try:
                response = await self.gateway.run(model, call)
                break
            except (QuotaExceeded, TenantBusy) as exc:
                wait = float(getattr(exc, "headers", {}).get("retry-after-ms", 1000)) / 1000
                if loop.time() + wait > give_up:
                    return self._failed(line, name, exc, call, loop.time() - start)
                await asyncio.sleep(wait)
            except Exception as exc:  # noqa: BLE001 - one line's failure is its record
                self.gateway.usage.record(tenant, name, 500)
                return self._failed(line, name, exc, call, loop.time() - start)
        usage = lg.extract_usage(response)
        price = (model.config.price_input, model.config.price_output)
        self.gateway.usage.record(tenant, name, 200, usage, price)
        cost = None
        if usage is not None:
            cost = round((usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1e6,
                         10)
        return self._record(line, response=response, done=call.record, requested=name,
                            elapsed=loop.time() - start, cost=cost,
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

