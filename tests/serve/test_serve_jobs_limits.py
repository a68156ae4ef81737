"""Per-tenant limits on jobs, and submissions that are safe to repeat: a large body is parsed
off the event loop and held compactly, a tenant's queued jobs are capped (429), and the same
``Idempotency-Key`` with the same body makes one job, whichever replica answers."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import json
import tracemalloc

import httpx
import pytest
from jobs_helpers import AUTH_A, AUTH_B, KEY_A, KEY_B, SECRET, finished, requests, wait_until
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def _config(tmp_path, latency: float = 0.0, extra: str = "", concurrency: int = 2):
    return write_config(tmp_path, f"""
[models.fake]
latency = {latency}
seconds_per_token = 0.0

[jobs]
max_lines = 100000
max_body_bytes = 67108864
default_model = "fake"
concurrency = {concurrency}
{extra}

[tenants.a]
api_key_sha256 = "{hashlib.sha256(KEY_A.encode()).hexdigest()}"

[tenants.b]
api_key_sha256 = "{hashlib.sha256(KEY_B.encode()).hexdigest()}"
""")


def _options(store, request):
    if store == "memory":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix")}


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_idempotency_key_makes_one_job(tmp_path, store, request) -> None:
    """Submitted twice with one key and body: one job (the second answer is the first job,
    marked ``idempotent-replayed``) whose lines are answered once; another body with that key
    is a 422; another tenant's identical key is its own."""
    body = {"requests": requests(3)}
    with served(_config(tmp_path), **_options(store, request)) as server, \
            httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        key = {"idempotency-key": "order-42"}
        first = http.post("/v1/jobs", json=body, headers={**AUTH_A, **key})
        second = http.post("/v1/jobs", json=body, headers={**AUTH_A, **key})
        assert first.status_code == second.status_code == 202
        assert second.json()["id"] == first.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        other = http.post("/v1/jobs", json={"requests": requests(4)}, headers={**AUTH_A, **key})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        theirs = http.post("/v1/jobs", json=body, headers={**AUTH_B, **key})
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
        listed = http.get("/v1/jobs", headers=AUTH_A).json()["data"]
        assert [j["id"] for j in listed] == [first.json()["id"]]
        http.headers.update(AUTH_A)
        job = wait_until(http, first.json()["id"], finished)
    assert job["counts"] == {"total": 3, "done": 3, "succeeded": 3, "failed": 0, "pending": 0}


def test_jobs_per_tenant_are_capped(tmp_path) -> None:
    """With ``max_jobs_per_tenant = 2``, a tenant's third unfinished job is refused with 429
    (saying which limit); another tenant still submits."""
    with served(_config(tmp_path, latency=30.0, extra="max_jobs_per_tenant = 2")) as server, \
            httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        for _ in range(2):
            assert http.post("/v1/jobs", json={"requests": requests(1)},
                             headers=AUTH_A).status_code == 202
        third = http.post("/v1/jobs", json={"requests": requests(1)}, headers=AUTH_A)
        assert third.status_code == 429, third.text
        assert "max_jobs_per_tenant" in third.json()["error"]["message"]
        assert http.post("/v1/jobs", json={"requests": requests(1)},
                         headers=AUTH_B).status_code == 202


def test_large_jsonl_is_parsed_off_the_loop_and_held_compactly(tmp_path, monkeypatch) -> None:
    """A 1 MB JSONL job (20k short lines) is parsed in a worker thread, not on the event loop
    every other request waits on, and the job holds its lines as text: what it keeps is a few
    times the body, not the ~20x of 20k decoded dicts."""
    import llmguard._serve.jobs.records as records

    seen_loops = []
    original = records.from_jsonl

    def watched(*args, **kwargs):
        seen_loops.append(asyncio._get_running_loop())
        return original(*args, **kwargs)
    monkeypatch.setattr(records, "from_jsonl", watched)
    for name in ("llmguard._serve.jobs.routes", "llmguard._serve.jobs.submit"):
        try:  # wherever the route looks it up
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "from_jsonl"):
            monkeypatch.setattr(module, "from_jsonl", watched)
    body = "".join(json.dumps({"messages": [{"role": "user", "content": f"line {i}"}]}) + "\n"
                   for i in range(20_000)).encode()
    with served(_config(tmp_path, latency=600.0, concurrency=1)) as server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            r = http.post("/v1/jobs", content=body,
                          headers={"content-type": "application/jsonl"})
            assert r.status_code == 202, r.text
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert seen_loops == [None]
    assert held < 8 * len(body), f"the job holds {held / 1e6:.1f} MB for {len(body) / 1e6:.1f} MB"
