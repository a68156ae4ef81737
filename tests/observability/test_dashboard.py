"""The Grafana dashboard against a real Prometheus scraping a workload of two pipelines: every
expression, template variables included, returns data for each pipeline.

This waits on real time (Prometheus is an external process): it polls the HTTP API until enough
scrapes are in, failing (not hanging) after 90 s."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import llmguard as lg
from llmguard.testing import FakeLLM

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "dashboard" / "grafana-dashboard.json"
PIPELINES = ("chat", "summarise")


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("LLMGUARD_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("LLMGUARD_REQUIRE_PROMETHEUS=1 but no `prometheus` binary on PATH; "
                        "apt-get install -y prometheus")
        pytest.skip("no `prometheus` binary (Debian: apt-get install -y prometheus); "
                    "set LLMGUARD_REQUIRE_PROMETHEUS=1 to make this a failure")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def priced(call: lg.Call, call_next: Any) -> Any:
    """Stands in for the litellm integration: prices every answered attempt."""
    result = await call_next(call)
    call.record.cost = 0.001
    return result


def build(server: lg.MetricsServer, name: str) -> Any:
    """The README's stack, every layer a panel reads, around a provider that fails sometimes."""
    script = [ConnectionError("blip"), "ok", ValueError("bad request")] * 4
    backup = FakeLLM(latency=0.01)
    return lg.Pipeline(
        lg.Metrics(meter_provider=server.meter_provider, name=name, provider="openai"),
        lg.Cache(ttl=300),
        lg.Fallback(backup.acompletion, on=lambda exc: isinstance(exc, ConnectionError)),
        lg.Retry(attempts=2, backoff=0.01, on=ConnectionError),
        lg.CircuitBreaker(),
        lg.RateLimit(rpm=10_000, tpm=10_000_000),
        lg.ConcurrencyLimit(2),
        priced,
    ).wrap(FakeLLM(script, latency=0.02).acompletion)


async def workload(guarded: Any, n: int) -> None:
    async def one(i: int) -> None:
        try:
            await guarded(model="gpt-4o", messages=[{"role": "user", "content": f"q{i % 6}"}])
        except Exception:
            pass

    await asyncio.gather(*(one(i) for i in range(n)))


def query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.load(urllib.request.urlopen(url, timeout=10))
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def label_values(port: int, metric: str, label: str) -> list[str]:
    url = (f"http://127.0.0.1:{port}/api/v1/label/{label}/values?"
           + urllib.parse.urlencode({"match[]": metric}))
    return json.load(urllib.request.urlopen(url, timeout=10))["data"]


@pytest.mark.looptime(False)
def test_every_dashboard_expression_has_data_for_both_pipelines(tmp_path: Path) -> None:
    """Two pipelines on one MeterProvider, scraped by a real Prometheus: the pipeline variable
    lists both, and every panel expression, evaluated with ``$pipeline`` set to each of them,
    returns data."""
    import re

    binary = prometheus_binary()
    dashboard = json.loads(DASHBOARD.read_text())
    server = lg.serve_metrics(port=0, set_global=False)
    guarded = [build(server, name) for name in PIPELINES]
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: llmguard\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        scrapes = 0.0
        while scrapes < 4:  # calls between scrapes, so every rate() has an increase to see
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "Prometheus did not scrape 4 times in 90 s"
            for one in guarded:
                asyncio.run(workload(one, 12))
            time.sleep(1)
            try:
                result = query(port, 'count_over_time(up{job="llmguard"}[1m])')
                scrapes = float(result[0]["value"][1]) if result else 0.0
            except OSError:
                pass
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"])
            assert match, f"unsupported variable query {variable['query']!r}"
            assert sorted(label_values(port, *match.groups())) == sorted(PIPELINES)
        missing = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in PIPELINES:
                    expr = target["expr"].replace("$pipeline", name).replace(
                        "$__rate_interval", "1m")
                    if not query(port, expr):
                        missing.append((panel["title"], name, expr))
        assert not missing, f"expressions without data: {missing}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.close()
