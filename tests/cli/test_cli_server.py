"""`llmguard run` against a real loopback HTTP server that counts what it receives: pacing,
interrupts, kills and resumes are checked where the provider would bill them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmguard._cli.deployments import resolve as resolve_deployments

from llmguard._cli.run import Settings, run, stack_spec
from llmguard._pipeline.stack import StackSpec
from llmguard.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 120  #: a safety net against a hung child, never an assertion about speed


class CountingServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that counts requests by prompt."""

    def __init__(self, delay: float = 0.0, headers: dict[str, str] | None = None) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.received.append(body["messages"][-1]["content"])
                time.sleep(delay)
                data = json.dumps({
                    "id": "c", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                }).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client went away (killed): nothing to answer
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def wait_for(self, n: int) -> None:
        """Block until ``n`` requests arrived (polling a counter; the test guard bounds it)."""
        deadline = time.monotonic() + HANG_GUARD
        while self.count() < n:
            assert time.monotonic() < deadline, f"server got only {self.count()} requests"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the listening socket too: a later test must not see it leak


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"}


def _input(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]})
                            + "\n" for i in range(n)))
    return path


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llmguard", "run", *args], cwd=tmp_path,
                            env=_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.looptime
async def test_quota_bound_run_paces_every_line_to_done(tmp_path: Path) -> None:
    """--rpm far below the file (100 lines at 30/min: over 3 virtual minutes of waiting) ends
    with every line ok: waiting for quota is never a failure, --timeout never counts it."""
    src = _input(tmp_path, 100)
    settings = Settings(input=str(src), output=str(tmp_path / "out.jsonl"), model="fake",
                        stack=StackSpec(rpm=30, timeout=5.0), progress=False)
    code = await run(settings, set(), [], total=100)
    out = _records(tmp_path / "out.jsonl")
    assert code == 0 and len(out) == 100 and all(r["ok"] for r in out)
    assert [r["line"] for r in out] == list(range(1, 101))


@pytest.mark.parametrize(("options", "slots"), [
    ([], 16), (["--rpm", "60"], 60), (["--rpm", "10"], 16), (["--rpm", "50000"], 1024),
    (["--rpm", "60", "--concurrency", "8"], 8), (["--tpm", "90000"], 16)])
def test_concurrency_follows_the_requests_quota_unless_given(options: list[str],
                                                             slots: int) -> None:
    """Without --concurrency the run holds the requests quota's minute in flight (at least
    16, at most 1024): a server that admits a minute's quota at once gets it at once, not over
    several round trips; --concurrency N is N."""
    args = _parser().parse_args(["run", "in.jsonl", "-o", "out.jsonl", *options])
    assert resolve_deployments(args) is None  # as main() does: one deployment, scalar quotas
    assert stack_spec(args).concurrency == slots


@pytest.mark.looptime(False)
def test_limits_are_learned_from_headers_without_reset(tmp_path: Path) -> None:
    """Without --rpm, x-ratelimit-limit-* (and remaining, with no reset, as LiteLLM's proxy
    sends) become the quotas in use, printed; every line completes."""
    server = CountingServer(headers={"x-ratelimit-limit-requests": "6000",
                                     "x-ratelimit-remaining-requests": "5990",
                                     "x-ratelimit-limit-tokens": "1000000"})
    try:
        src = _input(tmp_path, 20)
        proc = subprocess.run([sys.executable, "-m", "llmguard", "run", str(src), "-o", "o.jsonl",
                               "--model", "m", "--api-base", server.base], cwd=tmp_path,
                              env=_env(), capture_output=True, text=True, timeout=HANG_GUARD)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert "rpm=6000 tpm=1000000 (learned from x-ratelimit headers)" in proc.stderr
    assert "concurrency 1024 (follows the requests quota)" in proc.stderr  # the learned rpm's
    assert "quota used" in proc.stdout and server.count() == 20
    assert "sk-test" not in proc.stdout + proc.stderr


@pytest.mark.looptime(False)
def test_ctrl_c_sends_nothing_more_and_resume_never_pays_twice(tmp_path: Path) -> None:
    """After SIGINT the server gets no further request; lines at the provider finish within
    grace and are recorded (received == written); resuming sends exactly the rest."""
    server = CountingServer(delay=0.3)
    try:
        src = _input(tmp_path, 60)
        args = (str(src), "-o", "o.jsonl", "--model", "m", "--api-base", server.base,
                "--concurrency", "4", "--grace", "30")
        proc = _spawn(tmp_path, *args)
        server.wait_for(8)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 130, err
        at_exit = server.count()
        written = _records(tmp_path / "o.jsonl")
        assert at_exit == len(written) and "Resume with" in err
        assert "batch cancelled" not in err and "Traceback" not in err
        again = subprocess.run([sys.executable, "-m", "llmguard", "run", *args, "--resume"],
                               cwd=tmp_path, env=_env(), capture_output=True, text=True,
                               timeout=HANG_GUARD)
        assert again.returncode == 0, again.stderr
    finally:
        server.close()
    assert server.count() == 60 and sorted(server.received) == sorted(f"q{i}" for i in range(60))
    assert [r["line"] for r in _records(tmp_path / "o.jsonl")] == list(range(1, 61))


@pytest.mark.looptime(False)
def test_second_ctrl_c_abandons_in_flight_at_once(tmp_path: Path) -> None:
    """A second SIGINT abandons the calls at the provider without waiting out --grace; the
    summary accounts for them: received == written + abandoned."""
    server = CountingServer(delay=20)
    try:
        src = _input(tmp_path, 10)
        proc = _spawn(tmp_path, str(src), "-o", "o.jsonl", "--model", "m", "--api-base",
                      server.base, "--concurrency", "3", "--grace", "600")
        server.wait_for(3)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        while "stopping" not in proc.stderr.readline():
            pass
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD)  # far below --grace 600
    finally:
        server.close()
    assert proc.returncode == 130, err
    assert "3 lines in flight at the provider when stopped" in out, out
    assert server.count() == len(_records(tmp_path / "o.jsonl")) + 3


@pytest.mark.looptime(False)
def test_kill_9_then_resume_resends_at_most_the_lines_in_flight(tmp_path: Path) -> None:
    """Every answered line is on disk at once: after SIGKILL, requests received minus records
    written is at most the concurrency, and resume sends only those plus the unsent lines."""
    server = CountingServer(delay=0.05)
    try:
        src = _input(tmp_path, 120)
        args = (str(src), "-o", "o.jsonl", "--model", "m", "--api-base", server.base,
                "--concurrency", "6")
        proc = _spawn(tmp_path, *args)
        server.wait_for(40)
        proc.kill()
        proc.communicate(timeout=HANG_GUARD)
        time.sleep(0.2)  # let the server finish counting what reached it before the kill
        received, written = server.count(), len(_records(tmp_path / "o.jsonl"))
        assert 0 <= received - written <= 6
        again = subprocess.run([sys.executable, "-m", "llmguard", "run", *args, "--resume"],
                               cwd=tmp_path, env=_env(), capture_output=True, text=True,
                               timeout=HANG_GUARD)
        assert again.returncode == 0, again.stderr
    finally:
        server.close()
    assert server.count() == 120 + (received - written)
    assert [r["line"] for r in _records(tmp_path / "o.jsonl")] == list(range(1, 121))
