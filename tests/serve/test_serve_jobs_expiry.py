"""Finished jobs expire after [jobs] ttl, in one process and in Redis (every key of the job)."""

from __future__ import annotations

import time

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, requests
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)


def _expires(server) -> str:
    with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        job = http.post("/v1/jobs", json={"requests": requests(2)}).json()
        give_up = time.monotonic() + HANG_GUARD
        # Until it is gone: on a loaded machine the job may finish and expire between two polls.
        while (seen := http.get(f"/v1/jobs/{job['id']}")).status_code != 404:
            assert seen.json()["status"] not in ("failed", "cancelled"), seen.text
            assert time.monotonic() < give_up, "the finished job never expired"
            time.sleep(0.1)
        assert http.get(f"/v1/jobs/{job['id']}/results").status_code == 404
        assert http.get("/v1/jobs").json()["data"] == []
    return job["id"]


def test_finished_job_expires_in_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)
    with served(write_config(tmp_path, config(extra="ttl = 0.5"))) as server:
        _expires(server)


def test_finished_job_expires_in_redis(tmp_path, monkeypatch, redis_url, redis_prefix) -> None:
    import redis

    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)
    with served(write_config(tmp_path, config(extra="ttl = 3")), redis_url=redis_url,
                redis_prefix=redis_prefix) as server:
        job_id = _expires(server)
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}*{job_id}*")) == []
    finally:
        client.close()
