"""``/v1/jobs``: submit (202), status and long poll, SSE events, JSONL results, cancel, list.

Every route authenticates like the chat route; a job of another tenant answers 404, exactly as
an unknown id does (a tenant cannot probe for other tenants' job ids).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import HTTPProblem
from ..sse import StreamBody
from ..validate import parse_json, read_bytes
from .records import JSONL_TYPES, from_json, from_jsonl
from .service import JobService, public
from .webhooks import check_url

__all__ = ["job_routes"]

_JSON = "application/json"
_TERMINAL = ("completed", "failed", "cancelled")
MAX_WAIT = 60.0


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, separators=(",", ":"), default=str), status, headers, _JSON)


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise HTTPProblem(400, f"?{name}= must be a number from {low:g} to {high:g}, got {raw!r}",
                          "invalid_request", param=name)
    return value


def _parse(raw: bytes, kind: str, default: str | None,
           max_lines: int) -> tuple[list[str], dict[str, Any]]:
    """The body's lines, each as compact JSON text (what the store keeps), and its options."""
    if kind in JSONL_TYPES:
        lines, options = from_jsonl(raw, default, max_lines), {}
    else:
        lines, options = from_json(parse_json(raw), default, max_lines)
    return [json.dumps(line, separators=(",", ":")) for line in lines], options


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise HTTPProblem(400, "Idempotency-Key must be 1 to 255 printable characters",
                          "invalid_request", param="Idempotency-Key")
    return key


def jsonl(record: Any) -> bytes:
    """One JSONL line of UTF-8. Text that UTF-8 cannot carry (a lone surrogate such as
    ``"\\ud800"``, which JSON and Python allow) is written as its JSON escape instead, so the
    line always encodes and reads back as the same string (never a 200 cut mid-body)."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    try:
        return (text + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(record, default=str) + "\n").encode()


class JobRoutes:
    def __init__(self, routes: Any, service: JobService) -> None:
        self.routes, self.service = routes, service
        self.config = service.config

    async def _job(self, request: Request) -> tuple[Any, dict[str, Any]]:
        tenant = self.routes.tenant_of(request)
        job_id = request.path_params["job_id"]
        job = await self.service.get(tenant.name, job_id)
        if job is None:
            raise HTTPProblem(404, f"No job {job_id!r}: it never existed, belongs to another "
                              f"tenant, or finished more than ttl={self.config.ttl:g} s ago",
                              "job_not_found")
        return tenant, job

    async def submit(self, request: Request) -> Response:
        key: str | None = None
        tenant = None
        try:
            tenant = self.routes.tenant_of(request)
            key = _idempotency_key(request)
            raw = await read_bytes(request, self.config.max_body_bytes)
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            query = request.query_params
            default = query.get("model") or self.config.default_model
            # Parsing a large body takes a while: in a thread, so the gateway keeps serving.
            lines, options = await asyncio.to_thread(_parse, raw, kind, default,
                                                     self.config.max_lines)
            if kind in JSONL_TYPES:
                options = {k: query[k] for k in ("callback_url", "priority") if k in query}
                if "metadata" in query:
                    options["metadata"] = parse_json(query["metadata"].encode())
            meta = await self._meta(tenant, request, options)
            if key is not None:
                fingerprint = hashlib.sha256(f"{kind}\0{query}\0".encode() + raw).hexdigest()
                replay = await self._replay(tenant, key, fingerprint, meta["id"])
                if replay is not None:
                    key = None  # not ours to release
                    return replay
            del raw
            active = await self.service.store.active(tenant.name)
            if active >= self.config.max_jobs_per_tenant:
                raise HTTPProblem(429, f"tenant {tenant.name!r} has {active} jobs queued or "
                                  f"running, its limit ([jobs] max_jobs_per_tenant = "
                                  f"{self.config.max_jobs_per_tenant}); wait for one to end",
                                  "too_many_jobs", headers={"retry-after": "10"})
            await self.service.store.create(meta, lines)
            key = None
            job = await self.service.get(tenant.name, meta["id"])
        except Exception as exc:  # noqa: BLE001 - answered OpenAI-style
            if key is not None and tenant is not None:  # no job was made: the key is free
                await self.service.store.forget_key(tenant.name, key)
            return self.routes.error(exc)
        assert job is not None
        return _json(public(job), 202, {"location": f"/v1/jobs/{meta['id']}"})

    async def _meta(self, tenant: Any, request: Request, options: dict[str, Any]) -> dict:
        """The new job's meta from its options (priority, metadata, callback_url), checked."""
        priority = options.get("priority", request.headers.get("x-priority"))
        if priority is not None and not isinstance(priority, str):
            raise HTTPProblem(400, "'priority' must be low, normal or high",
                              "invalid_priority", param="priority")
        try:
            level = tenant.priority(priority)
        except ValueError as exc:
            raise HTTPProblem(400, str(exc), "invalid_priority", param="priority") from None
        metadata = options.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise HTTPProblem(400, "'metadata' must be an object", "invalid_request",
                              param="metadata")
        callback = options.get("callback_url")
        if callback is not None:
            callback = await check_url(callback, self.config.allow_private_callbacks)
            if tenant.name not in self.service.secrets:
                raise HTTPProblem(400, f"tenant {tenant.name!r} has no webhook secret to sign "
                                  "callbacks with; set webhook_secret_env in its config",
                                  "webhooks_not_configured", param="callback_url")
        return self.service.new_meta(tenant.name, level, callback, metadata)

    async def _replay(self, tenant: Any, key: str, fingerprint: str,
                      job_id: str) -> Response | None:
        """None when ``key`` is now ``job_id``'s; else the answer for a repeated submission:
        the same job (same body), 422 (another body), 409 (the first is still being made)."""
        found = await self.service.store.idempotent(tenant.name, key, fingerprint, job_id)
        if found is None:
            return None
        first, its_print = found
        if its_print != fingerprint:
            raise HTTPProblem(422, "this Idempotency-Key was already used for a job with a "
                              "different body; use a new key for a new job",
                              "idempotency_key_reused", param="Idempotency-Key")
        job = await self.service.get(tenant.name, first)
        if job is None:
            raise HTTPProblem(409, "a job with this Idempotency-Key is being submitted right "
                              "now; retry in a moment", "idempotency_key_in_use",
                              param="Idempotency-Key", headers={"retry-after": "1"})
        return _json(public(job), 202, {"location": f"/v1/jobs/{first}",
                                        "idempotent-replayed": "true"})

    async def status(self, request: Request) -> Response:
        try:
            wait = _number(request, "wait", 0.0, 0.0, MAX_WAIT)
            tenant, job = await self._job(request)
            if wait > 0 and job["status"] not in _TERMINAL:
                # Returns as soon as the job has any new event (progress or its end).
                events = await self.routes.gateway.bounded(
                    self.service.store.events(job["id"], job["_cursor"], wait))
                if events:
                    job = await self.service.get(tenant.name, job["id"]) or job
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)
        return _json(public(job))

    async def events(self, request: Request) -> Response:
        try:
            _tenant, job = await self._job(request)
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)
        cursor = request.headers.get("last-event-id") or "0"
        if not re.fullmatch(r"\d{1,20}(-\d{1,20})?", cursor):  # not one of ours: from the start
            cursor = "0"
        return StreamBody(self._stream(job["id"], cursor), media_type="text/event-stream",
                          write_timeout=self.routes.gateway.config.write_timeout,
                          headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def _stream(self, job_id: str, cursor: str) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        # On drain the stream ends and the client reconnects (Last-Event-ID) elsewhere.
        async for item in self.service.follow(job_id, cursor):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            cursor, name, data = item
            body = json.dumps(data, separators=(",", ":"))
            yield f"id: {cursor}\nevent: {name}\ndata: {body}\n\n".encode()

    async def results(self, request: Request) -> Response:
        try:
            _tenant, job = await self._job(request)
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)

        async def lines() -> AsyncIterator[bytes]:
            async for record in self.service.store.results(job["id"]):
                yield jsonl(record)

        return StreamBody(lines(), media_type="application/jsonl",
                          write_timeout=self.routes.gateway.config.write_timeout,
                          headers={"x-job-status": job["status"]})

    async def cancel(self, request: Request) -> Response:
        try:
            tenant, job = await self._job(request)
            if not await self.service.store.cancel(job["id"]):
                raise HTTPProblem(409, f"job {job['id']} already ended ({job['status']}); "
                                  "there is nothing to cancel", "job_already_finished")
            self.service.runner.cancelled(job["id"])  # its lines queued in this replica
            if job.get("_callback"):
                self.service.send_webhook(job["id"])
            job = await self.service.get(tenant.name, job["id"]) or job
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)
        return _json(public(job))

    async def list(self, request: Request) -> Response:
        try:
            tenant = self.routes.tenant_of(request)
            limit = int(_number(request, "limit", 20, 1, 100))
            after = request.query_params.get("after")
            jobs = await self.service.store.list(tenant.name, limit + 1, after)
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)
        page = jobs[:limit]
        return _json({"object": "list", "data": page, "has_more": len(jobs) > limit,
                      "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None})


def job_routes(routes: Any, service: JobService) -> list[Route]:
    r = JobRoutes(routes, service)
    return [
        Route("/v1/jobs", r.submit, methods=["POST"]),
        Route("/v1/jobs", r.list, methods=["GET"]),
        Route("/v1/jobs/{job_id}", r.status, methods=["GET"]),
        Route("/v1/jobs/{job_id}/events", r.events, methods=["GET"]),
        Route("/v1/jobs/{job_id}/results", r.results, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", r.cancel, methods=["POST"]),
    ]
