"""What a careless or hostile client can send, answered as OpenAI's API would: bodies nested too
deeply are a 400 on every route (never a 500 RecursionError), the WebSocket refuses what HTTP
refuses, ``"stream": null`` is the default, every answer has ``x-request-id``, and the fake
model's chunks carry ``created`` (the openai SDK's types expect it)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from jobs_helpers import AUTH_A, KEY_A, SECRET, config
from serve_helpers import HANG_GUARD, MESSAGES, chat, served, write_config
from websockets.sync.client import connect

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deeply_nested_json_is_a_400_on_every_route(tmp_path, depth) -> None:
    """Chat, embeddings and jobs (JSON and a JSONL line) answer 400 invalid_json, at a depth
    the decoder survives (150: the encoder or the cache key would recurse later) and one it
    does not (100,000)."""
    deep = _nested(depth)
    with served(write_config(tmp_path, config().replace("max_body_bytes = 8192",
                                                        "max_body_bytes = 1048576"))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            chat_body = ('{"model": "fake", "messages": [{"role": "user", "content": "hi", '
                         f'"x": {deep}}}]}}')
            for path, body in [("/v1/chat/completions", chat_body),
                               ("/v1/embeddings", f'{{"model": "fake", "input": {deep}}}'),
                               ("/v1/jobs", f'{{"requests": {deep}}}')]:
                r = http.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 400, (path, r.text)
                assert r.json()["error"]["code"] == "invalid_json"
                assert "levels deep" in r.json()["error"]["message"]
            # A JSONL job: the deep line is that line's error, the good line is answered.
            jsonl = json.dumps({"messages": MESSAGES}) + "\n" + deep + "\n"
            r = http.post("/v1/jobs", content=jsonl,
                          headers={"content-type": "application/jsonl"})
            assert r.status_code == 202, r.text
            job = http.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()
            while job["status"] != "completed":
                job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
            records = [json.loads(x) for x in
                       http.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
    assert [r["ok"] for r in records] == [True, False]
    assert "levels deep" in records[1]["error"]["message"]


def test_websocket_refuses_deep_and_oversized_messages_like_http(tmp_path) -> None:
    """A message larger than [server] max_body_bytes gets a 413 error (HTTP's answer), a deep
    one a 400; the socket stays usable for the next request."""
    with served(write_config(tmp_path, config())) as server:
        url = server.url.replace("http", "ws") + "/v1/ws"
        with connect(url, additional_headers={"authorization": f"Bearer {KEY_A}"},
                     open_timeout=HANG_GUARD, max_size=None) as ws:
            big = json.dumps({"type": "chat", "id": "big", "request": {
                "model": "fake", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}})
            r = httpx.post(server.url + "/v1/chat/completions", content=big, headers=AUTH_A,
                           timeout=HANG_GUARD)
            assert r.status_code == 413
            ws.send(big)
            answer = json.loads(ws.recv(timeout=HANG_GUARD))
            assert answer["type"] == "error" and answer["status"] == 413
            assert answer["error"]["code"] == "request_too_large"
            ws.send(_nested(100_000))
            answer = json.loads(ws.recv(timeout=HANG_GUARD))
            assert answer["status"] == 400 and answer["error"]["code"] == "invalid_json"
            ws.send(json.dumps({"type": "chat", "id": "ok", "request": chat()}))
            answer = json.loads(ws.recv(timeout=HANG_GUARD))
            assert answer["type"] == "completion" and answer["id"] == "ok"


def test_stream_null_is_the_default_and_answers_have_request_ids() -> None:
    """``"stream": null`` (the SDK's NOT_GIVEN rendered by some clients) is a normal request; the
    answer, and an error answer, carry ``x-request-id``, which the SDK exposes."""
    with served() as server:
        r = httpx.post(server.url + "/v1/chat/completions", json=chat(stream=None),
                       timeout=HANG_GUARD)
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion"
        bad = httpx.post(server.url + "/v1/chat/completions", json=chat(stream="yes"),
                         timeout=HANG_GUARD)
        assert bad.status_code == 400 and bad.headers["x-request-id"].startswith("req_")
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        first = client.chat.completions.create(model="fake", messages=MESSAGES)
        second = client.chat.completions.create(model="fake", messages=MESSAGES)
    assert first._request_id and first._request_id.startswith("req_")
    assert first._request_id != second._request_id


def test_fake_model_answers_and_chunks_carry_created() -> None:
    """Every chunk of a fake stream, and a whole answer, has an integer ``created``."""
    with served() as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        whole = client.chat.completions.create(model="fake", messages=MESSAGES)
        chunks = list(client.chat.completions.create(model="fake", messages=MESSAGES,
                                                     stream=True))
    assert isinstance(whole.created, int) and whole.created > 0
    assert chunks and all(isinstance(c.created, int) and c.created > 0 for c in chunks)
