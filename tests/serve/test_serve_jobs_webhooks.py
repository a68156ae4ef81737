"""Webhooks: a receiver written here with the standard library verifies the HMAC signature and
the timestamp; a receiver that is down at first gets the delivery once it is up, and every
attempt shows in the job's status."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, finished, requests, wait_until
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)
ALLOW = "allow_private_callbacks = true"


class Receiver:
    """An HTTP server on a loopback port that records (and verifies) webhook deliveries."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                stamp = self.headers["x-llmguard-timestamp"]
                expected = "v1=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
                valid = hmac.compare_digest(expected, self.headers["x-llmguard-signature"])
                fresh = abs(time.time() - int(stamp)) < 300  # the replay window
                received.append((valid and fresh, json.loads(body)))
                self.send_response(204 if valid and fresh else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _delivered(http: httpx.Client, job_id: str) -> dict:
    return wait_until(http, job_id, lambda j: finished(j) and j["webhook"]["delivered"])


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


def test_webhook_is_signed_and_carries_the_summary(tmp_path) -> None:
    with Receiver() as receiver, served(write_config(tmp_path, config(extra=ALLOW))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(3),
                                              "callback_url": receiver.url}).json()
            done = _delivered(http, job["id"])
    assert len(receiver.received) == 1
    valid, summary = receiver.received[0]
    assert valid
    assert summary["id"] == job["id"] and summary["status"] == "completed"
    assert summary["counts"]["succeeded"] == 3
    assert summary["results_url"] == f"/v1/jobs/{job['id']}/results"
    attempts = done["webhook"]["attempts"]
    assert [(a["attempt"], a["ok"], a["status"]) for a in attempts] == [(1, True, 204)]
    assert SECRET not in json.dumps(done)


def test_a_tampered_or_stale_delivery_fails_verification() -> None:
    """The receiver's check (the same as above) refuses a changed body or an old timestamp."""
    from llmguard._serve.jobs.webhooks import sign

    body, stamp = b'{"id":"job_1"}', str(int(time.time()))
    good = sign(SECRET, stamp, body)
    assert good == "v1=" + hmac.new(SECRET.encode(), f"{stamp}.".encode() + body,
                                    hashlib.sha256).hexdigest()
    assert sign(SECRET, stamp, b'{"id":"job_2"}') != good
    assert sign(SECRET, str(int(stamp) - 1), body) != good
    assert sign("other-secret", stamp, body) != good


def test_receiver_down_then_up(tmp_path) -> None:
    """Refused connections are retried with backoff; the delivery lands once the receiver is up,
    and the failed attempts are listed before the successful one."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on the port now
    url = f"http://127.0.0.1:{port}/hook"
    with served(write_config(tmp_path, config(extra=ALLOW))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(2),
                                              "callback_url": url}).json()
            wait_until(http, job["id"], lambda j: finished(j) and len(
                j["webhook"]["attempts"]) >= 2)
            with Receiver(port) as receiver:
                done = _delivered(http, job["id"])
    attempts = done["webhook"]["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert not any(a["ok"] for a in attempts[:-1]) and attempts[-1]["ok"]
    assert all(a["error"] for a in attempts[:-1])
    assert [valid for valid, _ in receiver.received] == [True]
