"""Two `llmguard serve --redis` replicas share jobs: either answers for any job, and when one is
SIGKILLed mid-job the other takes over its unfinished lines. The provider is a local counting
server: it sees each line at most once, plus at most the lines in flight at the kill."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, finished, requests, sse, wait_until
from serve_helpers import HANG_GUARD, ChildServer, write_config

pytestmark = pytest.mark.looptime(False)
CONCURRENCY = 3  # per replica: the most lines a killed replica can have in flight


class CountingProvider:
    """An OpenAI-compatible /v1/chat/completions that counts requests per prompt."""

    def __init__(self, latency: float) -> None:
        seen = self.seen = collections.Counter()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                with lock:
                    seen[prompt] += 1
                time.sleep(latency)
                answer = json.dumps({
                    "id": "chatcmpl-count", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok " + prompt}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(tmp_path, provider_url: str):
    text = config(concurrency=CONCURRENCY, extra="reclaim_after = 1.0").replace(
        "[models.fake]\nlatency = 0.0\nseconds_per_token = 0.0",
        f'[models.fake]\nprovider = "openai"\nbase_url = "{provider_url}"\nretries = 0')
    return write_config(tmp_path, text.replace("max_lines = 50", "max_lines = 500"))


def test_replica_killed_mid_job_is_taken_over(tmp_path, redis_url, redis_prefix) -> None:
    provider = CountingProvider(latency=0.15)
    args = ("--config", str(_config(tmp_path, provider.url)), "--redis", redis_url,
            "--redis-prefix", redis_prefix)
    env = {"JOBS_TEST_SECRET": SECRET}
    lines = 60
    try:
        with ChildServer(*args, env=env) as one, ChildServer(*args, env=env) as two:
            with httpx.Client(headers=AUTH_A, timeout=HANG_GUARD) as http:
                r = http.post(one.url + "/v1/jobs", json={"requests": requests(lines)})
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                http.base_url = two.url  # the other replica reports it
                wait_until(http, job_id, lambda j: j["counts"]["done"] >= 6)
                one.proc.send_signal(signal.SIGKILL)
                one.proc.wait(HANG_GUARD)
                done = wait_until(http, job_id, finished)
                events = sse(http, job_id)
                records = [json.loads(x) for x in
                           http.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
    finally:
        provider.close()
    assert done["status"] == "completed"
    assert done["counts"] == {"total": lines, "done": lines, "succeeded": lines, "failed": 0,
                              "pending": 0}
    assert [r["line"] for r in records] == list(range(1, lines + 1))  # every line, once
    assert all(r["ok"] for r in records)
    prompts = [f"line {i}" for i in range(lines)]
    assert all(provider.seen[p] >= 1 for p in prompts)
    paid_twice = sum(provider.seen[p] - 1 for p in prompts)
    assert paid_twice <= CONCURRENCY, provider.seen  # only what the killed replica had in flight
    assert [name for _i, name, _d in events].count("completed") == 1


def test_any_replica_reports_cancels_and_streams(tmp_path, redis_url, redis_prefix) -> None:
    provider = CountingProvider(latency=0.2)
    args = ("--config", str(_config(tmp_path, provider.url)), "--redis", redis_url,
            "--redis-prefix", redis_prefix)
    env = {"JOBS_TEST_SECRET": SECRET}
    try:
        with ChildServer(*args, env=env) as one, ChildServer(*args, env=env) as two:
            with httpx.Client(headers=AUTH_A, timeout=HANG_GUARD) as http:
                job = http.post(one.url + "/v1/jobs", json={"requests": requests(40)}).json()
                http.base_url = two.url
                wait_until(http, job["id"], lambda j: j["counts"]["done"] >= 2)
                assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
                http.base_url = one.url
                events = sse(http, job["id"])
                final = http.get(f"/v1/jobs/{job['id']}").json()
                listed = http.get("/v1/jobs").json()["data"]
    finally:
        provider.close()
    assert events[-1][1] == "cancelled" and final["status"] == "cancelled"
    assert final["counts"]["done"] < 40
    assert [j["id"] for j in listed] == [job["id"]]
