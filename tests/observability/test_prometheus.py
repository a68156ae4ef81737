"""serve_metrics: the Prometheus endpoint over HTTP, and a real Prometheus server scraping it."""

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
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import llmguard as lg
from llmguard._observability.metrics import DURATION_BUCKETS
from llmguard.testing import FakeLLM


@pytest.fixture
def server() -> Iterator[lg.MetricsServer]:
    server = lg.serve_metrics(port=0, set_global=False)
    yield server
    server.close()


def run_calls(server: lg.MetricsServer, n: int, latency: float) -> Any:
    guarded = lg.Pipeline(lg.Metrics(meter_provider=server.meter_provider, name="chat"),
                          lg.ConcurrencyLimit(8)).wrap(FakeLLM(latency=latency).acompletion)

    async def main() -> None:
        message = [{"role": "user", "content": "hello"}]
        await asyncio.gather(*(guarded(model="m", messages=message) for _ in range(n)))

    asyncio.run(main())
    return guarded  # alive while scraped: its limiter's gauges go with it


def scrape(server: lg.MetricsServer) -> dict[str, list]:
    url = f"http://127.0.0.1:{server.port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_endpoint_serves_genai_and_llmguard_metrics(server: lg.MetricsServer) -> None:
    """The /metrics endpoint parses as Prometheus text and holds the duration histogram with its
    convention buckets, token usage by type, calls by outcome and the limiter's limit."""
    guarded = run_calls(server, 5, 0.0)
    families = scrape(server)
    buckets = [s for s in families["gen_ai_client_operation_duration_seconds"]
               if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets][:3] == ["0.01", "0.02", "0.04"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 5
    tokens = {s.labels["gen_ai_token_type"] for s in families["gen_ai_client_token_usage"]}
    assert tokens == {"input", "output"}
    (calls,) = [s for s in families["llmguard_calls"] if s.name == "llmguard_calls_total"]
    assert calls.labels["llmguard_outcome"] == "success" and calls.value == 5
    (limit,) = families["llmguard_concurrency_limit"]
    assert limit.value == 8
    del guarded


def test_bad_port_is_refused() -> None:
    """A port outside 0..65535 is refused before anything starts."""
    with pytest.raises(ValueError, match="port"):
        lg.serve_metrics(port=70000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_prometheus_scrapes_and_answers_a_histogram_quantile(
    server: lg.MetricsServer, tmp_path: Path
) -> None:
    """A real Prometheus server scrapes a pipeline's endpoint and histogram_quantile over the
    duration buckets lands in the convention bucket holding the calls' median latency (50 ms
    of fake latency plus this machine's load, so the bucket is read from the in-process p50),
    and every query of the Grafana dashboard is accepted by that server.

    This is the one test that waits on real time: Prometheus is an external process, so it polls
    the query API until the first scrape is in (failing, not hanging, after 60 s)."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("LLMGUARD_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("LLMGUARD_REQUIRE_PROMETHEUS=1 but no `prometheus` binary on PATH; "
                        "apt-get install -y prometheus")
        pytest.skip("no `prometheus` binary (Debian: apt-get install -y prometheus); "
                    "set LLMGUARD_REQUIRE_PROMETHEUS=1 to make this a failure")
    stats = run_calls(server, 20, 0.05).stats()["metrics"]
    assert stats.latency_p50 is not None
    upper = min(b for b in DURATION_BUCKETS if b >= stats.latency_p50)
    lower = upper / 4  # one bucket of slack: the in-process p50 is a 4 %-wide bucket's edge
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: llmguard\n    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    query = ("histogram_quantile(0.5, sum by (le) "
             "(gen_ai_client_operation_duration_seconds_bucket{llmguard_pipeline=\"chat\"}))")
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    result: list = []
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "examples" / "dashboard"
                            / "grafana-dashboard.json").read_text())
    exprs = [target["expr"].replace("$pipeline", ".*").replace("$__rate_interval", "1m")
             for panel in dashboard["panels"] for target in panel["targets"]]
    try:
        deadline = time.monotonic() + 60
        while not result and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                body = json.load(urllib.request.urlopen(url, timeout=5))
                result = body["data"]["result"]
            except OSError:
                pass
            if not result:
                time.sleep(0.25)
        # Every dashboard query is valid PromQL for this Prometheus.
        for expr in exprs:
            query_url = (f"http://127.0.0.1:{port}/api/v1/query?"
                         + urllib.parse.urlencode({"query": expr}))
            assert json.load(urllib.request.urlopen(query_url, timeout=5))["status"] == "success"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert result, "Prometheus never returned the histogram quantile within 60 s"
    quantile = float(result[0]["value"][1])
    assert lower <= quantile <= upper


async def test_histograms_kept_in_process_export_as_the_sdk_would() -> None:
    """The gateway's provider keeps the Metrics layers' histograms in process (no SDK record per
    call) and adds them at collection: the same calls (answers, an error, a stream, calls
    queued on a limiter) give the same /metrics families, labels and values as a plain SDK
    provider."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, generate_latest

    from llmguard._observability.aggregated import prometheus_provider

    async def scraped(provider: Any, registry: Any) -> dict[tuple, float]:
        llm = FakeLLM([ValueError("bad request")], latency=0.3, seconds_per_token=0.013)
        guarded = lg.Pipeline(lg.Metrics(meter_provider=provider, name="chat"),
                              lg.ConcurrencyLimit(1)).wrap(llm.acompletion)
        message = [{"role": "user", "content": "hello there"}]
        with pytest.raises(ValueError):
            await guarded(model="m", messages=message)
        await asyncio.gather(*(guarded(model=model, messages=message)
                               for model in ("m", "m", "n")))
        stream = await guarded(model="m", messages=message, stream=True,
                               stream_options={"include_usage": True})
        async for _ in stream:
            pass
        text = generate_latest(registry).decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    plain_registry, kept_registry = CollectorRegistry(), CollectorRegistry()
    plain = await scraped(MeterProvider(metric_readers=[
        PrometheusMetricReader(registry=plain_registry)]), plain_registry)
    kept = await scraped(prometheus_provider(kept_registry), kept_registry)
    names = {name for name, _ in kept}
    for histogram in ("gen_ai_client_operation_duration_seconds",
                      "gen_ai_client_token_usage", "llmguard_admission_wait_seconds",
                      "gen_ai_client_operation_time_to_first_chunk_seconds",
                      "gen_ai_client_operation_time_per_output_chunk_seconds"):
        assert f"{histogram}_bucket" in names and f"{histogram}_sum" in names, histogram
    assert kept.keys() == plain.keys()
    for key, value in plain.items():
        assert kept[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
