"""A connection holds only what its client is still using: a streaming client that stops reading
loses its stream (and the model slot) after ``write_timeout``, a request whose client left
before it was sent upstream is never sent, and connections that never finish their headers
cannot exhaust the process's file descriptors and lock real clients out."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serve_helpers import HANG_GUARD, ROOT, CountingUpstream, chat, served, write_config

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


def _post(port: int, body: bytes, *, rcvbuf: int | None = None) -> socket.socket:
    """A raw client that sends one chat request and then reads nothing."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"content-type: application/json\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_stalled_streaming_client_gives_its_model_slot_back(tmp_path) -> None:
    """A client streams a long answer from a 1-slot model and stops reading. After
    ``write_timeout`` its stream ends, so another request gets the slot (200), instead of
    waiting out ``max_wait`` behind a stream nobody reads (503)."""
    path = write_config(tmp_path, """
[server]
write_timeout = 2

[models.fake]
latency = 0.0
seconds_per_token = 0.0
concurrency = 1
max_wait = 45
""")
    words = " ".join(f"w{i}" for i in range(120_000))  # ~18 MB of SSE, far past any buffer
    body = httpx.Request("POST", "http://x", json={
        "model": "fake", "stream": True,
        "messages": [{"role": "user", "content": words}]}).content
    with served(path) as server:
        stalled = _post(server.port, body, rcvbuf=4096)
        try:
            r = httpx.post(server.url + "/v1/chat/completions", json=chat(),
                           timeout=HANG_GUARD)
        finally:
            stalled.close()
    assert r.status_code == 200, r.text


def test_requests_whose_client_left_are_not_sent(tmp_path) -> None:
    """A 1-slot model answering in 2 s: one request holds the slot, four more wait and their
    clients hang up. Only the first reaches the upstream; the four are dropped unsent."""
    path = write_config(tmp_path, """
[models.fake]
latency = 2.0
seconds_per_token = 0.0
concurrency = 1
max_wait = 45
""")
    with served(path) as server:
        sent: list[str] = []
        model = server.gateway.models["fake"]
        model.upstream = CountingUpstream(model.upstream, sent)
        first = {}
        thread = threading.Thread(target=lambda: first.setdefault("r", httpx.post(
            server.url + "/v1/chat/completions", json=chat(), timeout=HANG_GUARD)))
        thread.start()
        while not sent:
            time.sleep(0.01)
        for i in range(4):
            sock = _post(server.port, httpx.Request("POST", "http://x", json={
                "model": "fake", "messages": [{"role": "user", "content": f"gone {i}"}]}).content)
            sock.close()
        thread.join(HANG_GUARD)
        assert first["r"].status_code == 200
        time.sleep(3.0)  # the slot has been free a while: a queued request would be sent now
        last = httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=HANG_GUARD)
    assert last.status_code == 200
    assert sent == ["hello there", "hello there"], sent


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_half_sent_headers_cannot_lock_clients_out(tmp_path) -> None:
    """280 connections that send half a request line and then nothing, against a gateway
    limited to 256 open files: a real client's request is still answered."""
    proc = subprocess.Popen([sys.executable, "-m", "llmguard", "serve", "--port", "0"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit_files)
    hogs = []
    try:
        line = proc.stdout.readline()
        url = re.search(r"listening on (http://[\d.]+:\d+)", line).group(1)
        port = int(url.rsplit(":", 1)[1])
        for _ in range(280):
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            hogs.append(sock)
        give_up = time.monotonic() + HANG_GUARD
        while True:
            try:
                r = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=10.0)
                break
            except httpx.HTTPError as exc:
                assert time.monotonic() < give_up, f"locked out: {exc!r}"
        assert r.status_code == 200, r.text
    finally:
        for sock in hogs:
            sock.close()
        proc.kill()
        proc.communicate(timeout=HANG_GUARD)


def test_connection_that_never_finishes_its_headers_is_closed(tmp_path) -> None:
    """``[server] header_timeout``: a connection that sends half a request and stops is closed
    after it (the read returns end-of-file), a complete request on another one is answered."""
    from serve_helpers import ChildServer

    path = write_config(tmp_path, "[server]\nheader_timeout = 1\n")
    with ChildServer("--config", str(path)) as child:
        port = int(child.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as slow:
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert httpx.post(child.url + "/v1/chat/completions", json=chat(),
                              timeout=HANG_GUARD).status_code == 200
            assert slow.recv(1024) == b""  # closed by the server, not by our timeout
