"""A finished job's results and events end well: text UTF-8 cannot carry (a lone surrogate) is
written as its JSON escape and never cuts the results body, and a client resuming a job's event
stream after its terminal event gets the end at once (memory store and Redis alike)."""

from __future__ import annotations

import json

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, finished, sse, wait_until
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def test_lone_surrogate_never_truncates_results(tmp_path) -> None:
    """A line whose text holds ``\\ud800`` (valid JSON, echoed back by the model) comes back in
    /results as the same string, with every other record, in a complete body."""
    lines = [{"messages": [{"role": "user", "content": "before"}]},
             {"messages": [{"role": "user", "content": "bad \ud800 text"}]},
             {"messages": [{"role": "user", "content": "after é"}]}]
    with served(write_config(tmp_path, config())) as server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", content=json.dumps({"requests": lines}),
                      headers={"content-type": "application/json"})
        assert r.status_code == 202, r.text
        job = wait_until(http, r.json()["id"], finished)
        assert job["status"] == "completed"
        body = http.get(f"/v1/jobs/{job['id']}/results")
    assert body.status_code == 200
    records = [json.loads(line) for line in body.content.decode("utf-8").splitlines()]
    assert [r["ok"] for r in records] == [True, True, True]
    assert "\ud800" in records[1]["response"]["choices"][0]["message"]["content"]
    assert "é" in records[2]["response"]["choices"][0]["message"]["content"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_resuming_events_after_the_end_ends_at_once(tmp_path, store, request) -> None:
    """An SSE client reconnecting with the terminal event's id as ``Last-Event-ID`` gets a
    complete, empty stream (no keep-alives until the TTL, no cut), as does one that asks after
    the job ended without a cursor: the events, then the end."""
    options = {}
    if store == "redis":
        options = {"redis_url": request.getfixturevalue("redis_url"),
                   "redis_prefix": request.getfixturevalue("redis_prefix")}
    with served(write_config(tmp_path, config()), **options) as server, \
            httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", json={"requests": [
            {"messages": [{"role": "user", "content": "one"}]}]})
        job = wait_until(http, r.json()["id"], finished)
        events = sse(http, job["id"])
        assert events[-1][1] == "completed"
        lines = []
        with http.stream("GET", f"/v1/jobs/{job['id']}/events",
                         headers={"last-event-id": events[-1][0]}) as response:
            for line in response.iter_lines():
                lines.append(line)
                # Nothing is left to wait for: a keep-alive means the stream would go on.
                assert not line.startswith(": keep-alive"), lines
    assert [x for x in lines if x and not x.startswith("retry:")] == []
