"""The Redis job store owns its timeouts and heals itself: a long poll or an SSE stream waits as
long as it was asked (with redis-py's 5 s default read timeout of recent releases, which this
venv has: the newest), and a Redis restarted without persistence (its consumer groups gone) gets
them back, so new jobs run again."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
import redis
from jobs_helpers import AUTH_A, SECRET, config, finished, sse, wait_until
from serve_helpers import HANG_GUARD, served, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from redis_server import Server  # noqa: E402 - the backend tests' own redis-server helper

pytestmark = pytest.mark.looptime(False)  # real sockets and a real Redis: real time


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def test_long_poll_and_sse_outlast_redis_py_read_timeout(tmp_path, redis_url,
                                                         redis_prefix) -> None:
    """A line taking 8 s: ``?wait=20`` answers with the finished job (not a 500 after 5 s) and
    the job's SSE stream delivers every event up to ``completed`` (not cut after 5 s)."""
    assert int(redis.__version__.split(".")[0]) >= 6  # the releases with a 5 s default
    path = write_config(tmp_path, config(latency=8.0))
    with served(path, redis_url=redis_url, redis_prefix=redis_prefix) as server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        first = http.post("/v1/jobs", json={"requests": [
            {"messages": [{"role": "user", "content": "slow"}]}]}).json()
        second = http.post("/v1/jobs", json={"requests": [
            {"messages": [{"role": "user", "content": "slow too"}]}]}).json()
        polled = http.get(f"/v1/jobs/{first['id']}", params={"wait": 20})
        assert polled.status_code == 200, polled.text
        job = polled.json()
        while not finished(job):
            job = http.get(f"/v1/jobs/{first['id']}", params={"wait": 20}).json()
        events = sse(http, second["id"])
    assert job["status"] == "completed"
    assert events[-1][1] == "completed"


def test_jobs_run_again_after_redis_restarts_without_persistence(tmp_path) -> None:
    """Redis restarted empty: the consumer groups the store made are gone (NOGROUP). The store
    makes them again, so a job submitted afterwards completes instead of staying queued."""
    own = Server()
    own.start()
    try:
        path = write_config(tmp_path, config())
        with served(path, redis_url=own.url, redis_prefix="restart") as server, \
                httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            before = http.post("/v1/jobs", json={"requests": [
                {"messages": [{"role": "user", "content": "one"}]}]}).json()
            assert wait_until(http, before["id"], finished)["status"] == "completed"
            own.stop()
            own.start()  # same port, no data: no job, no stream, no group
            after = None
            while after is None:  # the replica reconnects on its own; retry the submit
                r = http.post("/v1/jobs", json={"requests": [
                    {"messages": [{"role": "user", "content": "two"}]}]})
                after = r.json() if r.status_code == 202 else None
            job = wait_until(http, after["id"], finished)
        assert job["status"] == "completed" and job["counts"]["succeeded"] == 1
    finally:
        own.stop()
