"""Bad input over HTTP, as a table: every malformed request gets the right status and an
OpenAI-style error body; provider failures come back with the provider's status and kind."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_helpers import chat, served, write_config

pytestmark = pytest.mark.looptime(False)

CONFIG = """
[server]
max_body_bytes = 4096

[models.fake]
latency = 0.0

[models.fake-fail]
fail_status = 500
retries = 1

[models.fake-503]
fail_status = 503
retries = 0

[models.fake-429]
fail_status = 429
retries = 0

[models.rescued]
fail_status = 503
retries = 0
fallbacks = ["fake"]

[models.doomed]
fail_status = 502
retries = 0
fallbacks = ["fake-503"]
"""

CHAT = "/v1/chat/completions"
#: (case, method, path, raw body or JSON, headers, status, error code)
CASES = [
    ("malformed JSON", "POST", CHAT, b'{"model": "fake",', {}, 400, "invalid_json"),
    ("empty body", "POST", CHAT, b"", {}, 400, "invalid_json"),
    ("not an object", "POST", CHAT, b"[1, 2]", {}, 400, "invalid_json"),
    ("not UTF-8", "POST", CHAT, b'{"model": "\xff"}', {}, 400, "invalid_json"),
    ("no model", "POST", CHAT, {"messages": [{"role": "user", "content": "x"}]}, {}, 400,
     "invalid_request"),
    ("model not a string", "POST", CHAT, chat(model=3), {}, 400, "invalid_request"),
    ("no messages", "POST", CHAT, {"model": "fake"}, {}, 400, "invalid_request"),
    ("empty messages", "POST", CHAT, {"model": "fake", "messages": []}, {}, 400,
     "invalid_request"),
    ("message without role", "POST", CHAT, {"model": "fake", "messages": [{"content": "x"}]},
     {}, 400, "invalid_request"),
    ("stream not a bool", "POST", CHAT, chat(stream="yes"), {}, 400, "invalid_request"),
    ("max_tokens zero", "POST", CHAT, chat(max_tokens=0), {}, 400, "invalid_request"),
    ("max_tokens a string", "POST", CHAT, chat(max_tokens="9"), {}, 400, "invalid_request"),
    ("stream_options not an object", "POST", CHAT, chat(stream=True, stream_options=[1]), {},
     400, "invalid_request"),
    ("bad priority", "POST", CHAT, chat(), {"x-priority": "urgent"}, 400, "invalid_priority"),
    ("body too large", "POST", CHAT, chat(pad="x" * 5000), {}, 413, "request_too_large"),
    ("unknown model", "POST", CHAT, chat("gpt-9"), {}, 404, "model_not_found"),
    ("unknown route", "GET", "/v1/nothing", None, {}, 404, "not_found"),
    ("wrong method", "GET", CHAT, None, {}, 405, "method_not_allowed"),
    ("embeddings without input", "POST", "/v1/embeddings", {"model": "fake"}, {}, 400,
     "invalid_request"),
    ("embeddings bad dimensions", "POST", "/v1/embeddings",
     {"model": "fake", "input": "x", "dimensions": -1}, {}, 400, "invalid_request"),
    ("provider 500 after retries", "POST", CHAT, chat("fake-fail"), {}, 500, "server_error"),
    ("provider 503", "POST", CHAT, chat("fake-503"), {}, 503, "overloaded"),
    ("provider 429", "POST", CHAT, chat("fake-429"), {}, 429, "rate_limited"),
    ("every fallback failed", "POST", CHAT, chat("doomed"), {}, 503, "overloaded"),
    ("provider failure mid-request streamed", "POST", CHAT, chat("fake-503", stream=True), {},
     503, "overloaded"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(write_config(tmp_path_factory.mktemp("cfg"), CONFIG)) as server:
        yield server


@pytest.mark.parametrize(("case", "method", "path", "body", "headers", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(server, case, method, path, body, headers, status, code) -> None:
    """The status, OpenAI's error shape and the code, for each bad request."""
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = httpx.request(method, server.url + path, content=content,
                      headers={"content-type": "application/json", **headers})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code and error["message"]
    if status == 429:
        assert "retry-after" in r.headers


def test_fallback_answers_when_the_primary_fails(server) -> None:
    """A model whose upstream fails falls back to another model's pipeline: 200."""
    r = httpx.post(server.url + CHAT, json=chat("rescued"))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: hello there"


def test_gateway_still_serves_after_bad_input(server) -> None:
    """Nothing above left the gateway in a bad state."""
    assert httpx.post(server.url + CHAT, json=chat()).status_code == 200
