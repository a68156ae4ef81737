"""Shared by the jobs tests: a two-tenant config, and waiting for a job without wall-clock
assertions (the HANG_GUARD is a safety net against a hung server, never a speed claim)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
from serve_helpers import HANG_GUARD

KEY_A, KEY_B = "jobs-tenant-a-key", "jobs-tenant-b-key"
AUTH_A = {"authorization": f"Bearer {KEY_A}"}
AUTH_B = {"authorization": f"Bearer {KEY_B}"}
SECRET = "whsec-test-signing-secret"


def config(latency: float = 0.0, concurrency: int = 4, extra: str = "") -> str:
    return f"""
[models.fake]
latency = {latency}
seconds_per_token = 0.0

[jobs]
concurrency = {concurrency}
max_lines = 50
max_body_bytes = 8192
default_model = "fake"
webhook_retry_for = 30
{extra}

[tenants.a]
api_key_sha256 = "{hashlib.sha256(KEY_A.encode()).hexdigest()}"
webhook_secret_env = "JOBS_TEST_SECRET"

[tenants.b]
api_key_sha256 = "{hashlib.sha256(KEY_B.encode()).hexdigest()}"
"""


def requests(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"line {i}"}]} for i in range(n)]


def wait_until(http: httpx.Client, job_id: str, done: Any) -> dict[str, Any]:
    """Long-poll the job until ``done(job)`` holds."""
    give_up = time.monotonic() + HANG_GUARD
    while True:
        job = http.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
        assert "status" in job, job
        if done(job):
            return job
        assert time.monotonic() < give_up, f"job never reached the state: {job}"


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("completed", "failed", "cancelled")


def sse(http: httpx.Client, job_id: str, last_event_id: str | None = None) -> list[
        tuple[str, str, dict[str, Any]]]:
    """Every event of the job's SSE stream: (id, event, data)."""
    import json

    events, current = [], {}
    headers = {"last-event-id": last_event_id} if last_event_id else {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append((current.get("id"), current.get("event"),
                                   json.loads(current["data"])))
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.strip()
    return events
