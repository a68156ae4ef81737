"""/v1/ws: chat requests in, streamed replies and job events out, with the HTTP auth and quotas."""

from __future__ import annotations

import json

import httpx
import pytest
from jobs_helpers import AUTH_A, KEY_A, SECRET, config, requests
from serve_helpers import HANG_GUARD, MESSAGES, served, write_config
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.looptime(False)


def _ws(server, key: str | None = KEY_A):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return connect(server.url.replace("http", "ws") + "/v1/ws", additional_headers=headers,
                   open_timeout=HANG_GUARD)


def _until(ws, predicate) -> list[dict]:
    got = []
    while True:
        message = json.loads(ws.recv(timeout=HANG_GUARD))
        got.append(message)
        if predicate(message):
            return got


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def test_chat_streamed_and_whole_over_one_socket(tmp_path) -> None:
    with served(write_config(tmp_path, config(latency=0.01))) as server, _ws(server) as ws:
        ws.send(json.dumps({"type": "chat", "id": "s", "request": {
            "model": "fake", "messages": MESSAGES, "stream": True}}))
        ws.send(json.dumps({"type": "chat", "id": "w", "request": {
            "model": "fake", "messages": MESSAGES}}))
        got, done = [], set()
        while done != {"s", "w"}:
            message = json.loads(ws.recv(timeout=HANG_GUARD))
            got.append(message)
            if message["type"] == "done":
                done.add(message["id"])
    streamed = [m for m in got if m["id"] == "s"]
    assert streamed[-1]["type"] == "done"
    chunks = [m["data"] for m in streamed if m["type"] == "chunk"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    whole = [m for m in got if m["id"] == "w"]
    assert [m["type"] for m in whole] == ["completion", "done"]
    assert whole[0]["data"]["choices"][0]["message"]["content"] == "echo: hello there"


def test_job_events_and_errors_over_the_socket(tmp_path) -> None:
    with served(write_config(tmp_path, config(latency=0.02, concurrency=1))) as server:
        job = httpx.post(server.url + "/v1/jobs", json={"requests": requests(4)},
                         headers=AUTH_A, timeout=HANG_GUARD).json()
        with _ws(server) as ws:
            ws.send(json.dumps({"type": "subscribe", "id": "j", "job": job["id"]}))
            events = _until(ws, lambda m: m.get("event") in ("completed", "cancelled"))
            ws.send(json.dumps({"type": "subscribe", "id": "x", "job": "job_nope"}))
            missing = _until(ws, lambda m: m["id"] == "x")[-1]
            ws.send(json.dumps({"type": "chat", "id": "m", "request": {"model": "nope",
                                                                      "messages": MESSAGES}}))
            unknown = _until(ws, lambda m: m["id"] == "m")[-1]
            ws.send("not json")
            bad = _until(ws, lambda m: m["type"] == "error")[-1]
    names = [m["event"] for m in events]
    assert names[-1] == "completed" and set(names[:-1]) == {"progress"}
    assert events[-1]["data"]["counts"]["succeeded"] == 4
    assert missing["type"] == "error" and missing["status"] == 404
    assert unknown["status"] == 404 and unknown["error"]["code"] == "model_not_found"
    assert bad["error"]["code"] == "invalid_json"


def test_same_auth_and_quota_as_http(tmp_path) -> None:
    text = config().replace('webhook_secret_env = "JOBS_TEST_SECRET"',
                            'webhook_secret_env = "JOBS_TEST_SECRET"\nrpm = 2')
    with served(write_config(tmp_path, text)) as server:
        with pytest.raises(InvalidStatus):  # refused at the handshake
            _ws(server, "wrong-key").__enter__()
        with _ws(server) as ws:
            for i in range(3):
                ws.send(json.dumps({"type": "chat", "id": i, "request": {
                    "model": "fake", "messages": MESSAGES}}))
            got = [json.loads(ws.recv(timeout=HANG_GUARD)) for _ in range(5)]
    finals = [m for m in got if m["type"] in ("done", "error")]
    assert sorted(m["type"] for m in finals) == ["done", "done", "error"]
    refused = next(m for m in finals if m["type"] == "error")
    assert refused["status"] == 429 and refused["error"]["code"] == "rate_limit_exceeded"
