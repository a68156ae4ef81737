"""`llmguard serve` against calling the fake directly, a bare uvicorn hop, and LiteLLM's proxy.

    python benchmarks/bench_gateway.py [--seconds 3] [--no-litellm]

Prints one table:

* per-request time: the fake model called in process; a sequential round trip (one client, one
  keep-alive connection) to a bare Starlette endpoint on uvicorn answering a fixed body; the
  same to the gateway (auth, validation, tenant gate, the model's Metrics/Retry/Timeout/
  ConcurrencyLimit pipeline, the fake, usage accounting). The gateway's overhead is its round
  trip minus the bare one (what the gateway adds to an HTTP hop a client pays anyway) and its
  round trip minus the direct call (what the whole network hop costs);
* requests/s with 1 and 2 uvicorn workers, driven by two load processes (aiohttp, 32 requests
  in flight each) for ``--seconds`` each, and the same against LiteLLM's proxy answering with
  ``mock_response`` (1 and 2 workers), when ``litellm[proxy]`` is installed.

Everything listens on 127.0.0.1 and stops when the run ends; the fake answers with no latency.
Figures are medians of the sequential round trips and totals of the load runs (noisy on a
shared 2-core machine: compare the ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}
FAKE_CONFIG = "[models.fake]\nlatency = 0.0\nseconds_per_token = 0.0\n"
LITELLM_CONFIG = """model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake
      mock_response: "echo: hello there"
      api_key: none
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, limit: float = 120.0) -> None:
    import urllib.request

    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {limit:g} s")


def spawn(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None):
    return subprocess.Popen(cmd, cwd=cwd or ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the workers go too
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


async def sequential(url: str, n: int) -> float:
    """Median seconds of one request at a time over one keep-alive connection."""
    import aiohttp

    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(n + 100):
            start = time.perf_counter()
            async with session.post(url, json=BODY, headers={"authorization": "Bearer x"}) as r:
                await r.read()
                assert r.status == 200, r.status
            if i >= 100:  # warm-up excluded
                times.append(time.perf_counter() - start)
    return statistics.median(times)


async def load(url: str, seconds: float, concurrency: int) -> int:
    import aiohttp

    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(session) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            async with session.post(url, json=BODY, headers={"authorization": "Bearer x"}) as r:
                await r.read()
                if r.status == 200:
                    done += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done


def throughput(url: str, seconds: float) -> float:
    """Requests/s from two load processes (a single one would be the bottleneck)."""
    cmd = [sys.executable, __file__, "--load", url, "--seconds", str(seconds)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(int(p.communicate()[0].strip() or 0) for p in procs) / seconds


def direct_fake(n: int = 20000) -> float:
    from llmguard.testing import FakeLLM

    fake = FakeLLM()

    async def run() -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await fake.acompletion(**BODY)
            times.append(time.perf_counter() - start)
            fake.calls.clear()
        return statistics.median(times)

    return asyncio.run(run())


def bare_app():
    """A Starlette endpoint answering a fixed completion: the HTTP hop alone."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = b'{"id":"x","object":"chat.completion","choices":[]}'

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/healthz", healthz)])


def gateway(tmp: str, workers: int) -> tuple[subprocess.Popen, str]:
    config = Path(tmp, "fake.toml")
    config.write_text(FAKE_CONFIG)
    port = free_port()
    proc = spawn([sys.executable, "-m", "llmguard", "serve", "--config", str(config), "--port",
                  str(port), "--workers", str(workers)], env={"PYTHONPATH": str(ROOT)})
    wait_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def litellm(tmp: str, workers: int) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    Path(tmp, "litellm.yaml").write_text(LITELLM_CONFIG)
    port = free_port()
    proc = spawn([exe, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port),
                  "--num_workers", str(workers)], cwd=tmp,
                 env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                      "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})
    wait_up(f"http://127.0.0.1:{port}/health/liveliness", proc, limit=180)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:  # a load process
        print(asyncio.run(load(args.load, args.seconds, 32)))
        return
    if args.bare:  # the bare endpoint process
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.bare, log_level="warning",
                    access_log=False)
        return
    rows: list[tuple[str, str]] = []
    direct = direct_fake()
    rows.append(("fake called in process (median)", f"{direct * 1e6:.1f} us"))
    port = free_port()
    bare = spawn([sys.executable, __file__, "--bare", str(port)])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", bare)
        hop = asyncio.run(sequential(url, args.requests))
        bare_rps = throughput(url, args.seconds)
    finally:
        stop(bare)
    rows.append(("bare uvicorn round trip (median)", f"{hop * 1e3:.3f} ms"))
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = gateway(tmp, 1)
        try:
            trip = asyncio.run(sequential(url, args.requests))
            rps1 = throughput(url, args.seconds)
        finally:
            stop(proc)
        proc, url = gateway(tmp, 2)
        try:
            rps2 = throughput(url, args.seconds)
        finally:
            stop(proc)
        rows.append(("gateway round trip (median)", f"{trip * 1e3:.3f} ms"))
        rows.append(("gateway overhead over the bare hop", f"{(trip - hop) * 1e3:.3f} ms"))
        rows.append(("gateway round trip over the direct call", f"{(trip - direct) * 1e3:.3f} ms"))
        rows.append(("bare uvicorn, 1 worker", f"{bare_rps:,.0f} req/s"))
        rows.append(("gateway, 1 worker", f"{rps1:,.0f} req/s"))
        rows.append(("gateway, 2 workers", f"{rps2:,.0f} req/s"))
        if args.no_litellm:
            rows.append(("LiteLLM proxy", "skipped (--no-litellm)"))
        else:
            for workers, mine in ((1, rps1), (2, rps2)):
                try:
                    proc, url = litellm(tmp, workers)
                except (RuntimeError, FileNotFoundError) as exc:
                    rows.append((f"LiteLLM proxy, {workers} worker(s)", f"could not run: {exc}"))
                    continue
                try:
                    theirs = throughput(url, args.seconds)
                finally:
                    stop(proc)
                rows.append((f"LiteLLM proxy (mock_response), {workers} worker(s)",
                             f"{theirs:,.0f} req/s; gateway is {mine / theirs:.1f}x"))
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 34}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
