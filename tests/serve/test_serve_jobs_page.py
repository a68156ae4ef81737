"""The /jobs status page in real headless Chromium (driven over the DevTools protocol): it
loads, follows a running job's progress live over SSE, and shows the finished job's counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from jobs_helpers import AUTH_A, KEY_A, SECRET, config, requests
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
    with served(write_config(tmp_path, config(latency=0.3, concurrency=1))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job = http.post("/v1/jobs", json={"requests": requests(6)}).json()
            browser = Browser(f"{server.url}/jobs#key={KEY_A}")
            try:
                browser.until("document.body.dataset.loaded === 'yes'")
                row = f"document.getElementById('job-{job['id']}')"
                browser.until(f"{row} !== null")
                # the key left the address bar once read
                assert KEY_A not in browser.eval("location.href")
                status = browser.until(f"{row}.dataset.status === 'completed' && "
                                       f"{row}.dataset.seen")
                cells = browser.eval(
                    f"[...{row}.querySelectorAll('td')].map(td => td.textContent)")
                bar = browser.eval(f"[{row}.querySelector('progress').value, "
                                   f"{row}.querySelector('progress').max]")
            finally:
                browser.close()
    seen = [int(x) for x in status.split(",")]
    assert seen == sorted(seen) and seen[-1] == 6
    assert len(seen) >= 3  # the page showed progress moving, not just a start and an end
    assert cells[0] == job["id"] and cells[1] == "completed"
    assert cells[3:] == ["6", "6", "0", "6"]  # done, succeeded, failed, total
    assert bar == [6, 6]
