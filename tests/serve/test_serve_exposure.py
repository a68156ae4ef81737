"""What the gateway shows, and to whom: ``/metrics`` stays bounded whatever model names clients
invent, needs a key (or ``--public-metrics``) once tenants exist, and a gateway without tenants
answers only to localhost pages (Host and Origin checked, ``--allow-origin`` to add a site), so
a web page in the user's browser cannot drive it, even by DNS rebinding."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from serve_helpers import HANG_GUARD, MESSAGES, ThreadServer, chat, served, write_config
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from llmguard._serve.config import default_config, load
from llmguard._serve.server import make_app

pytestmark = pytest.mark.looptime(False)  # real sockets: real time

KEY = "exposure-tenant-key"
TENANTS = f"""
[models.fake]
latency = 0.0

[tenants.a]
api_key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
"""


def _handshake(port: int, host: str) -> bytes:
    """The status line a WebSocket handshake naming ``host`` gets (websockets always sends the
    URL's own Host, so this one is written by hand)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as sock:
        sock.sendall(f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        return sock.recv(4096)


def test_unknown_model_names_never_become_metric_labels() -> None:
    """100 requests naming 20 KB models that do not exist (404) add one bounded series, not
    2 MB of labels: the model label only takes configured names ("unknown" otherwise)."""
    with served() as server, httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        http.post("/v1/chat/completions", json=chat("nope"))
        before = len(http.get("/metrics").text)
        for i in range(100):
            r = http.post("/v1/chat/completions", json=chat(f"{i}-" + "m" * 20_000))
            assert r.status_code == 404
        text = http.get("/metrics").text
    assert len(text) - before < 2_000
    assert "m" * 100 not in text
    assert 'gen_ai_request_model="unknown"' in text


def test_metrics_need_a_key_once_tenants_exist(tmp_path, monkeypatch) -> None:
    """With tenants, /metrics answers 401 without the [server] metrics_key_env key (a tenant's
    own API key is not enough: it would show every tenant's traffic), 200 with it."""
    monkeypatch.setenv("EXPOSURE_METRICS_KEY", "metrics-secret")
    path = write_config(tmp_path, '[server]\nmetrics_key_env = "EXPOSURE_METRICS_KEY"\n'
                        + TENANTS)
    with served(path) as server, httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        tenant = {"authorization": f"Bearer {KEY}"}
        assert http.post("/v1/chat/completions", json=chat(), headers=tenant).status_code == 200
        assert http.get("/metrics").status_code == 401
        refused = http.get("/metrics", headers=tenant)
        assert refused.status_code == 401 and "metrics_key_env" in refused.text
        ok = http.get("/metrics", headers={"authorization": "Bearer metrics-secret"})
    assert ok.status_code == 200 and 'llmguard_tenant="a"' in ok.text


def test_public_metrics_flag_opens_metrics(tmp_path) -> None:
    """``--public-metrics`` (here through the same override the command line applies) serves
    /metrics to anyone; without it and without a key configured, 401 says what to set."""
    path = write_config(tmp_path, TENANTS)
    with served(path) as server:
        closed = httpx.get(server.url + "/metrics", timeout=HANG_GUARD)
    assert closed.status_code == 401 and "--public-metrics" in closed.text
    from llmguard._serve.server import configure  # the command line's overrides

    config = configure(load(str(path)), {"public_metrics": True})
    with ThreadServer(make_app(config)) as server:
        assert httpx.get(server.url + "/metrics", timeout=HANG_GUARD).status_code == 200


def test_open_gateway_refuses_foreign_hosts_and_origins() -> None:
    """Without tenants: a rebound name in Host, or a page of another site in Origin, gets 403
    (HTTP) or a refused WebSocket; localhost names, IP literals and loopback pages pass."""
    with served() as server, httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        for headers in ({"host": "attacker.example"},
                        {"origin": "https://attacker.example"},
                        {"origin": "null"}):
            r = http.post("/v1/chat/completions", json=chat(), headers=headers)
            assert r.status_code == 403, headers
            assert r.json()["error"]["code"] == "origin_not_allowed"
        for headers in ({}, {"host": f"localhost:{server.port}"},
                        {"origin": f"http://localhost:{server.port}"},
                        {"origin": "http://127.0.0.1:3000"}):
            r = http.post("/v1/chat/completions", json=chat(), headers=headers)
            assert r.status_code == 200, headers
        url = server.url.replace("http", "ws") + "/v1/ws"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin="https://attacker.example", open_timeout=HANG_GUARD)
        assert refused.value.response.status_code == 403
        assert _handshake(server.port, "rebound.example").startswith(b"HTTP/1.1 403")
        assert _handshake(server.port, "localhost").startswith(b"HTTP/1.1 101")
        with connect(url, origin="http://localhost", open_timeout=HANG_GUARD) as ws:
            ws.send(json.dumps({"type": "chat", "id": 1, "request": {
                "model": "fake", "messages": MESSAGES}}))
            assert json.loads(ws.recv(timeout=HANG_GUARD))["type"] == "completion"


def test_allow_origin_admits_one_site(tmp_path) -> None:
    """``--allow-origin https://app.example`` admits that origin (and its name as Host), and
    still no other."""
    from llmguard._serve.server import configure  # the command line's overrides

    config = configure(default_config(), {"allow_origin": ["https://app.example"]})
    with ThreadServer(make_app(config)) as server:
        with httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
            ok = http.post("/v1/chat/completions", json=chat(),
                           headers={"origin": "https://app.example", "host": "app.example"})
            other = http.post("/v1/chat/completions", json=chat(),
                              headers={"origin": "https://other.example"})
    assert ok.status_code == 200 and other.status_code == 403


def test_gateway_with_tenants_keeps_serving_any_host() -> None:
    """The Host/Origin check is for open gateways only: with tenants the key is the guard (a
    deployment behind a load balancer answers to its public name)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp, served(write_config(Path(tmp), TENANTS)) as server:
        r = httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=HANG_GUARD,
                       headers={"host": "api.example", "origin": "https://app.example",
                                "authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
