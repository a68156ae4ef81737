"""The /jobs status page in real headless Chromium (driven over the DevTools protocol): it
loads, follows a running job's progress live over SSE, and shows the finished job's counts.

The provider answers one line each time the test releases it, so the page is seen at each step
of the job whatever the machine's speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from jobs_helpers import AUTH_A, KEY_A, SECRET, config, requests
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class GatedProvider:
    """An OpenAI-compatible upstream answering a request only when ``release()`` lets one go."""

    def __init__(self) -> None:
        gate = self.gate = threading.Semaphore(0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                gate.acquire(timeout=HANG_GUARD)
                answer = json.dumps({"id": "c", "object": "chat.completion",
                                     "model": body["model"], "choices": [{
                                         "index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "ok"}}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                               "total_tokens": 2}}).encode()
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
        for _ in range(100):
            self.gate.release()
        self.server.shutdown()
        self.server.server_close()


class Browser:
    """Headless Chromium with one page, evaluated through the DevTools protocol."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="llmguard-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        give_up = time.monotonic() + HANG_GUARD
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < give_up, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        while True:
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            assert time.monotonic() < give_up
            time.sleep(0.05)
        self._connection = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.ws = self._connection.__enter__()
        self.next_id = 0

    def eval(self, expression: str):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "returnByValue": True}}))
        while True:
            message = json.loads(self.ws.recv(timeout=HANG_GUARD))
            if message.get("id") == self.next_id:
                return message["result"]["result"].get("value")

    def until(self, expression: str):
        give_up = time.monotonic() + HANG_GUARD
        while True:
            value = self.eval(expression)
            if value:
                return value
            assert time.monotonic() < give_up, f"never true in the page: {expression}"
            time.sleep(0.05)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.proc.kill()
        self.proc.wait(HANG_GUARD)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_status_page_follows_a_job_live(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)
    provider = GatedProvider()
    text = config(concurrency=1).replace(
        "[models.fake]\nlatency = 0.0\nseconds_per_token = 0.0",
        f'[models.fake]\nprovider = "openai"\nbase_url = "{provider.url}"\nretries = 0')
    lines = 4
    try:
        with served(write_config(tmp_path, text)) as server:
            with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
                job = http.post("/v1/jobs", json={"requests": requests(lines)}).json()
                browser = Browser(f"{server.url}/jobs#key={KEY_A}")
                try:
                    browser.until("document.body.dataset.loaded === 'yes'")
                    row = f"document.getElementById('job-{job['id']}')"
                    browser.until(f"{row} !== null")
                    assert KEY_A not in browser.eval("location.href")  # the key left the URL
                    shown = []
                    for step in range(1, lines + 1):  # one line answered at a time
                        provider.gate.release()
                        shown.append(browser.until(
                            f"{row}.querySelector('.col-done').textContent === '{step}' && "
                            f"{row}.querySelector('.col-status').textContent"))
                    browser.until(f"{row}.dataset.status === 'completed'")
                    cells = browser.eval(
                        f"[...{row}.querySelectorAll('td')].map(td => td.textContent)")
                    bar = browser.eval(f"[{row}.querySelector('progress').value, "
                                       f"{row}.querySelector('progress').max]")
                    seen = browser.eval(f"{row}.dataset.seen")
                finally:
                    browser.close()
    finally:
        provider.close()
    assert shown[:-1] == ["running"] * (lines - 1)  # progress moved while the job ran
    assert cells[0] == job["id"] and cells[1] == "completed"
    assert cells[3:] == ["4", "4", "0", "4"]  # done, succeeded, failed, total
    assert bar == [4, 4]
    done_values = [int(x) for x in seen.split(",")]
    assert done_values == sorted(done_values) and done_values[-1] == lines
