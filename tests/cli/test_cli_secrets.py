"""`llmguard run` never writes or prints the key it was given, whatever its shape, even when the
provider echoes it back (#35 item 8): a real loopback server, a subprocess, every output read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 120  #: a safety net against a hung child, never an assertion about speed

#: Keys of providers whose keys match no `sk-` pattern: Groq, Google, a bare hex token.
KEYS = ["gsk_4fQm9ZkT2wLr8VbN1cXp7HdJ", "AIzaSyD3x-Q8mVt_9kLw2RbN7yPz4HcJ", "a3f9c2e17b4d"]


class EchoingServer:
    """An OpenAI-compatible server that refuses every request, echoing the key it was sent in
    the error (as some providers do): a 401 for odd prompts, a 500 (retried) for even ones."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                odd = int(body["messages"][-1]["content"][1:]) % 2
                status = 401 if odd else 500
                data = json.dumps({"error": {
                    "message": f"Incorrect API key provided: {key}. key={key}",
                    "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def server():
    echoing = EchoingServer()
    yield echoing
    echoing.server.shutdown()
    echoing.server.server_close()  # the listening socket too, not left to the collector


@pytest.mark.looptime(False)
@pytest.mark.parametrize("how", ["--api-key", "--api-key-env"])
@pytest.mark.parametrize("key", KEYS, ids=["groq", "google", "hex"])
def test_the_exact_key_is_never_written_or_printed(tmp_path, server, key, how) -> None:
    """The provider echoes the key in every error; out.jsonl (records and their errors), stdout
    (the summary) and stderr (progress, logs) never contain it, for a key given by flag or by
    environment variable (before: only `sk-...` keys were hidden)."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]})
                              + "\n" for i in range(4)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": ""}
    args = [sys.executable, "-m", "llmguard", "run", str(source), "-o", str(tmp_path / "out.jsonl"),
            "--api-base", server.base, "--model", "m", "--retries", "1", "--verbose",
            "--no-progress"]
    if how == "--api-key":
        args += ["--api-key", key]
    else:
        args += ["--api-key-env", "MY_PROVIDER_KEY"]
        env["MY_PROVIDER_KEY"] = key
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    output = (tmp_path / "out.jsonl").read_text()
    records = [json.loads(line) for line in output.splitlines()]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(records) == 4 and not any(r["ok"] for r in records)
    assert {r["error"]["kind"] for r in records} == {"auth", "server_error"}
    assert all("Incorrect API key provided: ***" in r["error"]["message"] for r in records)
    for where, text in (("out.jsonl", output), ("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert key not in text, f"the key is in {where}"
    assert "4 failed" in proc.stdout or "failed" in proc.stdout


def test_redacted_logs_hide_known_secrets(caplog) -> None:
    """The log record factory `llmguard run` installs hides a known secret in a message and in
    a traceback, on every logger."""
    import logging

    from llmguard._core import redact as redaction

    secret = "xai-" + "q" * 20
    previous = logging.getLogRecordFactory()
    known = redaction._known
    try:
        redaction.add_secret(secret)
        redaction.redact_logs()
        redaction.redact_logs()  # installed once
        with caplog.at_level(logging.WARNING):
            try:
                raise RuntimeError(f"bad key {secret}")
            except RuntimeError:
                logging.getLogger("anything.else").exception("sending with %s failed", secret)
        text = caplog.text
    finally:
        logging.setLogRecordFactory(previous)
        redaction._known = known
    assert secret not in text and "sending with *** failed" in text and "bad key ***" in text
