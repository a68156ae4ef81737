"""One gateway's jobs: the store (memory, or Redis with ``--redis``), the workers, the webhook
secrets and the sender. Built by the app, started and closed by its lifespan."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..config import ConfigError
from ..tenants import ANONYMOUS
from .store import Event, MemoryJobStore
from .webhooks import deliver
from .worker import JobRunner

__all__ = ["JobService"]

_TERMINAL = ("completed", "failed", "cancelled")


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if not k.startswith("_")}


class JobService:
    """Jobs for ``gateway`` (see the module doc)."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.config = cfg = gateway.config.jobs
        if gateway.redis_url is not None:
            from .redis_store import RedisJobStore

            self.store: Any = RedisJobStore(gateway.redis_url, gateway.redis_prefix,
                                            ttl=cfg.ttl, reclaim_after=cfg.reclaim_after,
                                            tenants=list(gateway.tenants.by_name))
        else:
            self.store = MemoryJobStore(cfg.ttl)
        #: tenant name -> webhook signing secret (read from the environment once, at start).
        self.secrets: dict[str, str] = {}
        for name, tenant in gateway.tenants.by_name.items():
            env = tenant.config.webhook_secret_env or (
                cfg.webhook_secret_env if name == ANONYMOUS else None)
            if env:
                value = os.environ.get(env)
                if not value:
                    where = "jobs" if name == ANONYMOUS else f"tenants.{name}"
                    raise ConfigError(f"{where}.webhook_secret_env: the environment variable "
                                      f"{env} is not set (or empty)")
                self.secrets[name] = value
        self.runner = JobRunner(gateway, self.store, cfg.concurrency, self.notify)
        self.runner.redact.secrets += list(self.secrets.values())  # never in a log line
        self._webhooks: set[asyncio.Task[Any]] = set()

    def new_meta(self, tenant: str, priority: int, callback_url: str | None,
                 metadata: Any) -> dict[str, Any]:
        return {"id": "job_" + uuid.uuid4().hex[:24], "tenant": tenant, "priority": priority,
                "callback_url": callback_url, "metadata": metadata, "created": time.time()}

    async def get(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The job if it exists and belongs to ``tenant`` (internal ``_`` fields included)."""
        job = await self.store.get(job_id)
        return job if job is not None and job["_tenant"] == tenant else None

    async def follow(self, job_id: str, cursor: str,
                     keepalive: float = 5.0) -> AsyncIterator[Event | None]:
        """The job's events after ``cursor`` up to its terminal one, and None after every
        ``keepalive`` seconds without one. Ends at once when the job already ended before the
        cursor (a client resuming after the end) or is gone, and when the gateway drains."""
        store = self.store
        while not self.gateway.draining:
            events = await store.events(job_id, cursor, 0)
            if not events:
                job = await store.get(job_id)
                if job is None:
                    return
                # A job that ended has no event to wait for: one more look for the ones that
                # came between the two reads, then the end.
                events = await store.events(job_id, cursor, 0 if job["status"] in _TERMINAL
                                            else keepalive)
                if not events:
                    if job["status"] in _TERMINAL:
                        return
                    yield None
                    continue
            for cursor, name, data in events:
                yield cursor, name, data
                if name in _TERMINAL:
                    return

    def send_webhook(self, job_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.notify(job_id))
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    async def notify(self, job_id: str) -> None:
        """Deliver the finished job's summary to its callback URL (if it has one)."""
        job = await self.store.get(job_id)
        if job is None or not job.get("_callback"):
            return
        secret = self.secrets.get(job["_tenant"])
        if secret is None:  # refused at submit; a config change since then
            return
        summary = _public(job)
        summary.pop("webhook", None)
        summary["results_url"] = f"/v1/jobs/{job_id}/results"

        async def record(attempt: dict[str, Any]) -> None:
            await self.store.add_delivery(job_id, attempt)

        await deliver(job["_callback"], summary, secret,
                      allow_private=self.config.allow_private_callbacks,
                      timeout=self.config.webhook_timeout,
                      retry_for=self.config.webhook_retry_for, record=record)

    def start(self) -> None:
        self.runner.start()

    async def aclose(self) -> None:
        await self.runner.aclose()
        for task in list(self._webhooks):
            task.cancel()
        await asyncio.gather(*self._webhooks, return_exceptions=True)
        await self.store.aclose()


#: A job's public JSON (its internal ``_`` fields dropped).
public = _public
