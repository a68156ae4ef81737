"""Jobs over HTTP on a real server on loopback: submit, poll, long poll, SSE order, results,
cancel mid-job, the tenant's list and isolation between tenants."""

from __future__ import annotations

import json

import httpx
import pytest
from jobs_helpers import (AUTH_A, AUTH_B, SECRET, config, finished, requests, sse,
                          wait_until)
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def test_submit_poll_and_results(tmp_path) -> None:
    with served(write_config(tmp_path, config())) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            body = {"requests": requests(5), "metadata": {"batch": "nightly"}}
            r = http.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            job = r.json()
            assert job["status"] == "queued" and job["counts"]["total"] == 5
            assert r.headers["location"] == f"/v1/jobs/{job['id']}"
            done = wait_until(http, job["id"], finished)
            assert done["status"] == "completed"
            assert done["counts"] == {"total": 5, "done": 5, "succeeded": 5, "failed": 0,
                                      "pending": 0}
            assert done["metadata"] == {"batch": "nightly"}
            assert done["started_at"] is not None and done["finished_at"] >= done["started_at"]
            r = http.get(f"/v1/jobs/{job['id']}/results")
            assert r.headers["content-type"].startswith("application/jsonl")
            records = [json.loads(x) for x in r.text.splitlines()]
            assert [x["line"] for x in records] == [1, 2, 3, 4, 5]
            assert all(x["ok"] and x["response"]["object"] == "chat.completion" for x in records)
            assert records[2]["response"]["choices"][0]["message"]["content"] == "echo: line 2"
            assert set(records[0]) >= {"id", "line", "ok", "model", "response", "error",
                                       "usage", "cost", "elapsed", "metadata"}


def test_jsonl_body_in_llmguard_run_format(tmp_path) -> None:
    """The Batch API form keeps custom_id and metadata; a bad line is that line's error."""
    lines = [json.dumps({"custom_id": "req-1", "metadata": {"k": 1},
                         "body": {"model": "fake", "messages": [{"role": "user",
                                                                 "content": "a"}]}}),
             "", "{not json", json.dumps({"messages": [{"role": "user", "content": "b"}]})]
    with served(write_config(tmp_path, config())) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            r = http.post("/v1/jobs", content="\n".join(lines).encode(),
                          headers={"content-type": "application/jsonl"})
            assert r.status_code == 202, r.text
            job = wait_until(http, r.json()["id"], finished)
            assert job["counts"]["succeeded"] == 2 and job["counts"]["failed"] == 1
            records = [json.loads(x) for x in
                       http.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
            assert [(x["id"], x["line"], x["ok"]) for x in records] == [
                ("req-1", 1, True), ("line-3", 3, False), ("line-4", 4, True)]
            assert records[0]["metadata"] == {"k": 1}
            assert records[1]["error"]["kind"] == "invalid_input"


def test_long_poll_returns_early_on_change(tmp_path) -> None:
    """?wait=30 answers at the job's first change, long before the job (or the wait) ends."""
    with served(write_config(tmp_path, config(latency=0.5, concurrency=1))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(6)}).json()
            polled = http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
            assert polled["status"] == "running"
            assert polled["counts"]["done"] < 6
            # a finished job answers a long poll at once
            wait_until(http, job["id"], finished)
            again = http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
            assert again["status"] == "completed"


def test_sse_progress_in_order_then_one_terminal_event(tmp_path) -> None:
    with served(write_config(tmp_path, config(latency=0.05, concurrency=2))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(8)}).json()
            events = sse(http, job["id"])
            resumed = sse(http, job["id"], last_event_id=events[2][0])
    assert resumed == events[3:]  # a reconnect with Last-Event-ID continues after that event
    names = [name for _id, name, _data in events]
    assert names[-1] == "completed" and names.count("completed") == 1
    assert set(names[:-1]) == {"progress"}
    dones = [data["counts"]["done"] for _id, _name, data in events]
    assert dones == sorted(dones) and dones[-1] == 8
    assert len(set(dones)) > 2  # progress was reported along the way, not only at the end
    assert events[-1][2]["counts"]["succeeded"] == 8


def test_cancel_mid_job(tmp_path) -> None:
    with served(write_config(tmp_path, config(latency=0.2, concurrency=2))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(30)}).json()
            wait_until(http, job["id"], lambda j: j["counts"]["done"] >= 2)
            r = http.post(f"/v1/jobs/{job['id']}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            events = sse(http, job["id"])
            assert events[-1][1] == "cancelled"
            assert [n for _i, n, _d in events].count("cancelled") == 1
            again = http.post(f"/v1/jobs/{job['id']}/cancel")
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "job_already_finished"
            final = http.get(f"/v1/jobs/{job['id']}").json()
            assert final["status"] == "cancelled" and final["counts"]["done"] < 30
            records = http.get(f"/v1/jobs/{job['id']}/results").text.splitlines()
            # the lines already sent when it was cancelled are answered and kept, no others
            assert final["counts"]["done"] <= len(records) <= final["counts"]["done"] + 2


def test_tenant_isolation_and_list(tmp_path) -> None:
    with served(write_config(tmp_path, config())) as server:
        with httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
            mine = [http.post("/v1/jobs", json={"requests": requests(1)},
                              headers=AUTH_A).json()["id"] for _ in range(3)]
            theirs = http.post("/v1/jobs", json={"requests": requests(1)},
                               headers=AUTH_B).json()["id"]
            for path in ("", "/events", "/results"):
                r = http.get(f"/v1/jobs/{mine[0]}{path}", headers=AUTH_B)
                assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
            r = http.post(f"/v1/jobs/{mine[0]}/cancel", headers=AUTH_B)
            assert r.status_code == 404
            page = http.get("/v1/jobs", params={"limit": 2}, headers=AUTH_A).json()
            assert [j["id"] for j in page["data"]] == mine[::-1][:2] and page["has_more"]
            rest = http.get("/v1/jobs", params={"limit": 2, "after": page["last_id"]},
                            headers=AUTH_A).json()
            assert [j["id"] for j in rest["data"]] == [mine[0]] and not rest["has_more"]
            listed_b = http.get("/v1/jobs", headers=AUTH_B).json()["data"]
            assert [j["id"] for j in listed_b] == [theirs]
