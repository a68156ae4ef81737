"""``/v1/jobs``: submit (202), status and long poll, SSE events, JSONL results, cancel, list.

Every route authenticates like the chat route; a job of another tenant answers 404, exactly as
an unknown id does (a tenant cannot probe for other tenants' job ids).
"""

from __future__ import annotations

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
from .service import JobService, public
from .submit import SubmitRoutes, json_response

__all__ = ["job_routes"]

_TERMINAL = ("completed", "failed", "cancelled")
MAX_WAIT = 60.0


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


def jsonl(record: Any) -> bytes:
    """One JSONL line of UTF-8. Text that UTF-8 cannot carry (a lone surrogate such as
    ``"\\ud800"``, which JSON and Python allow) is written as its JSON escape instead, so the
    line always encodes and reads back as the same string (never a 200 cut mid-body)."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    try:
        return (text + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(record, default=str) + "\n").encode()


class JobRoutes(SubmitRoutes):
    """The job routes (submission in :mod:`.submit`)."""

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
        return json_response(public(job))

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
        return json_response(public(job))

    async def list(self, request: Request) -> Response:
        try:
            tenant = self.routes.tenant_of(request)
            limit = int(_number(request, "limit", 20, 1, 100))
            after = request.query_params.get("after")
            jobs = await self.service.store.list(tenant.name, limit + 1, after)
        except Exception as exc:  # noqa: BLE001
            return self.routes.error(exc)
        page = jobs[:limit]
        return json_response({"object": "list", "data": page, "has_more": len(jobs) > limit,
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
