"""Jobs are scheduled fairly and cancelled for real: a tenant's backlog (a long job, or lines its
own quota holds back) never holds up another tenant's job, no worker sleeps on a quota, and a
cancel reaches every line not sent yet (queued here, put aside for quota, or waiting in the
model's queue) so none of them is sent after the cancel returned."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from jobs_helpers import AUTH_A, AUTH_B, KEY_A, KEY_B, SECRET, finished, requests, wait_until
from serve_helpers import HANG_GUARD, CountingUpstream, served, write_config

from llmguard._serve.config import load
from llmguard._serve.server import make_app


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def _config(tmp_path, *, latency: float, concurrency: int, model_slots: int = 64,
            rpm_b: int | None = None):
    return write_config(tmp_path, f"""
[models.fake]
latency = {latency}
seconds_per_token = 0.0
concurrency = {model_slots}
max_wait = 1000

[jobs]
concurrency = {concurrency}
max_lines = 500
max_body_bytes = 1048576
default_model = "fake"

[tenants.a]
api_key_sha256 = "{hashlib.sha256(KEY_A.encode()).hexdigest()}"

[tenants.b]
api_key_sha256 = "{hashlib.sha256(KEY_B.encode()).hexdigest()}"
{f"rpm = {rpm_b}" if rpm_b else ""}
""")


@pytest.mark.looptime(False)
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_one_tenants_long_job_does_not_hold_up_another_tenant(tmp_path, store, request) -> None:
    """Tenant B's 300-line job is queued first; tenant A's 1-line job still completes after a
    few of B's lines, not after all of them (one FIFO for every tenant), in memory and in
    Redis (per-tenant streams)."""
    options = {}
    if store == "redis":
        options = {"redis_url": request.getfixturevalue("redis_url"),
                   "redis_prefix": request.getfixturevalue("redis_prefix")}
    with served(_config(tmp_path, latency=0.1, concurrency=2), **options) as server, \
            httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        big = http.post("/v1/jobs", json={"requests": requests(300)}, headers=AUTH_B).json()
        small = http.post("/v1/jobs", json={"requests": requests(1)}, headers=AUTH_A).json()
        done = wait_until(http.__class__(base_url=server.url, headers=AUTH_A,
                                         timeout=HANG_GUARD), small["id"], finished)
        backlog = http.get(f"/v1/jobs/{big['id']}", headers=AUTH_B).json()
    assert done["status"] == "completed"
    # B's job takes 15 s; A's came out after a few of its lines (before: after all 300).
    assert backlog["counts"]["done"] < 200, backlog


@pytest.mark.looptime(False)
def test_a_tenant_held_back_by_its_quota_does_not_hold_up_the_workers(tmp_path) -> None:
    """Tenant B (rpm = 1) queues 5 lines on 2 workers: its first line runs, the rest wait a
    minute for B's quota. Tenant A's job completes meanwhile (no worker sleeps in B's quota)."""
    with served(_config(tmp_path, latency=0.0, concurrency=2, rpm_b=1)) as server, \
            httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        held = http.post("/v1/jobs", json={"requests": requests(5)}, headers=AUTH_B).json()
        wait_until(http.__class__(base_url=server.url, headers=AUTH_B, timeout=HANG_GUARD),
                   held["id"], lambda job: job["counts"]["done"] >= 1)
        other = http.post("/v1/jobs", json={"requests": requests(3)}, headers=AUTH_A).json()
        done = wait_until(http.__class__(base_url=server.url, headers=AUTH_A,
                                         timeout=HANG_GUARD), other["id"], finished)
        backlog = http.get(f"/v1/jobs/{held['id']}", headers=AUTH_B).json()
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 3
    assert backlog["counts"]["done"] == 1 and backlog["status"] == "running"


async def _gateway(tmp_path, **options):
    """The app in this loop (virtual time), its job workers started, and an ASGI client."""
    app = make_app(load(str(_config(tmp_path, **options))))
    sent: list[str] = []
    for model in app.state.gateway.models.values():
        model.upstream = CountingUpstream(model.upstream, sent)
    app.state.jobs.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return app, client, sent


async def test_cancel_reaches_lines_in_the_model_queue_and_waiting_for_quota(tmp_path) -> None:
    """A 1-slot model with 5 s answers: at the cancel one line is in flight and three wait in
    the model's queue; tenant B (rpm = 1) has lines put aside for its quota. After the cancel
    no further line of either job reaches the upstream, however long one waits."""
    app, client, sent = await _gateway(tmp_path, latency=5.0, concurrency=4, model_slots=1,
                                       rpm_b=1)
    try:
        a = (await client.post("/v1/jobs", json={"requests": requests(6)},
                               headers=AUTH_A)).json()
        b = (await client.post("/v1/jobs", json={"requests": requests(4)},
                               headers=AUTH_B)).json()
        await asyncio.sleep(1.0)
        before = len(sent)
        assert 1 <= before <= 2  # a line of A, maybe one of B, holds the single slot
        for job, auth in ((a, AUTH_A), (b, AUTH_B)):
            r = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
            assert r.json()["status"] == "cancelled"
        await asyncio.sleep(300.0)  # several quota windows and model answers later
        assert len(sent) == before, sent
        # The workers are free again: a new job runs.
        c = (await client.post("/v1/jobs", json={"requests": requests(1)},
                               headers=AUTH_A)).json()
        await asyncio.sleep(30.0)
        job = (await client.get(f"/v1/jobs/{c['id']}", headers=AUTH_A)).json()
        assert job["status"] == "completed"
    finally:
        await client.aclose()
        await app.state.jobs.aclose()
        await app.state.gateway.aclose()
