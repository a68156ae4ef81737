"""`llmguard serve` against a bare pass-through proxy and LiteLLM's proxy, in front of one fast
upstream, in one run.

    python benchmarks/bench_gateway.py [--seconds 5] [--repeats 5] [--litellm [PATH]]

Contenders, each a server process on 127.0.0.1 forwarding ``POST /v1/chat/completions`` to the
same upstream (an aiohttp server answering a fixed OpenAI-shaped completion with usage):

* **bare proxy**: Starlette on uvicorn with one shared aiohttp session, ~20 lines (``--proxy``):
  read the body, post it upstream, answer with the upstream's bytes. What "a gateway" costs at
  the least in Python;
* **llmguard serve**: a tenant (API key, rpm/tpm quotas that never bind, a concurrency cap) and
  the model's layers (Metrics, Retry, Timeout, RateLimit, ConcurrencyLimit) to the upstream as
  an ``openai`` provider;
* **LiteLLM proxy** (``--litellm``: the ``litellm`` command of an environment with
  ``litellm[proxy]``, by default ``$LITELLM_PROXY``, else the one beside this Python; ``--litellm
  PATH`` names another): the same upstream as an ``openai/`` model with ``api_base``, one
  worker.

Fairness: every contender serves from one process pinned to CPU 0 (``taskset``), the load
generator (``wrk``, compiled: ``apt-get install wrk``) and the upstream run on the other CPUs;
every contender gets the same warm-up (``--warmup`` seconds of load) before it is measured;
runs at each connection count are interleaved (A, B, A, B, ... in alternating order per repeat)
so drifting load from other work on the machine hits all alike, and the table shows medians and
the median of the per-pair ratios. CPU per request is the server process's CPU time over the
requests it answered in the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-tenant-key"
BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hello there"}]}
ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "echo: hello there"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}).encode()
CONNECTIONS = (16, 64)
GATEWAY = "llmguard serve (tenant + layers)"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpus() -> tuple[str, str]:
    """(the server's CPU, the others' CPUs): the first CPU this process may use, and the rest."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return str(mine[0]), str(mine[0])
    return str(mine[0]), ",".join(str(c) for c in mine[1:])


def spawn(cmd: list[str], cpu: str, env: dict[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], cwd=cwd or ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:  # exited already (a contender that could not start)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: any workers go too
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(30)


def wait_up(url: str, proc: subprocess.Popen, limit: float = 180.0, data: bytes | None = None,
            headers: dict[str, str] | None = None) -> None:
    import urllib.request

    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            request = urllib.request.Request(url, data=data, headers=headers or {})
            urllib.request.urlopen(request, timeout=5).read()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {limit:g} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICK


def server_pid(proc: subprocess.Popen) -> int:
    """The serving process: taskset execs the command, so the Popen's own pid."""
    return proc.pid


# --- the processes -------------------------------------------------------------------------


def run_upstream(port: int) -> None:
    """A fast OpenAI-compatible upstream: a fixed completion for every POST."""
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_proxy(port: int, upstream: str) -> None:
    """The bare pass-through proxy: Starlette + one aiohttp session, nothing else."""
    import aiohttp
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    session: list[aiohttp.ClientSession] = []

    async def chat(request: Request) -> Response:
        if not session:
            session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        async with session[0].post(f"{upstream}/chat/completions", data=await request.body(),
                                   headers={"content-type": "application/json"}) as answer:
            return Response(await answer.read(), answer.status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


GATEWAY_CONFIG = """[models.gpt]
provider = "openai"
base_url = "{upstream}"
api_key_env = "BENCH_UPSTREAM_KEY"
model = "gpt-4o-mini"
rpm = 100000000
tpm = 1000000000000
concurrency = 256
retries = 2
timeout = 30

[tenants.acme]
api_key_sha256 = "{digest}"
rpm = 100000000
tpm = 1000000000000
concurrency = 256
"""

LITELLM_CONFIG = """model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}
      api_key: none
"""


def start_gateway(tmp: str, upstream: str, cpu: str, root: Path = ROOT
                  ) -> tuple[subprocess.Popen, str]:
    config = Path(tmp, "gateway.toml")
    config.write_text(GATEWAY_CONFIG.format(upstream=upstream,
                                            digest=hashlib.sha256(KEY.encode()).hexdigest()))
    port = free_port()
    proc = spawn([sys.executable, "-m", "llmguard", "serve", "--config", str(config), "--port",
                  str(port)], cpu, env={"PYTHONPATH": str(root), "BENCH_UPSTREAM_KEY": "none"})
    return proc, f"http://127.0.0.1:{port}"


def start_proxy(upstream: str, cpu: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = spawn([sys.executable, __file__, "--proxy", str(port), upstream], cpu)
    return proc, f"http://127.0.0.1:{port}"


def default_proxy() -> str:
    """The ``litellm`` command of LiteLLM's proxy: ``$LITELLM_PROXY`` (a separate environment
    with ``litellm[proxy]``), else the one beside this Python."""
    return os.environ.get("LITELLM_PROXY") or str(Path(sys.executable).with_name("litellm"))


def start_litellm(exe: str, tmp: str, upstream: str, cpu: str) -> tuple[subprocess.Popen, str]:
    if not Path(exe).exists():
        raise FileNotFoundError("litellm's proxy is not installed (pip install 'litellm[proxy]')")
    Path(tmp, "litellm.yaml").write_text(LITELLM_CONFIG.format(upstream=upstream))
    port = free_port()
    proc = spawn([exe, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port),
                  "--num_workers", "1"], cpu, cwd=tmp,
                 env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                      "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})
    return proc, f"http://127.0.0.1:{port}"


# --- load ----------------------------------------------------------------------------------


def wrk_script(tmp: str) -> str:
    path = Path(tmp, "post.lua")
    body = json.dumps(BODY).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'wrk.method = "POST"\nwrk.body = "{body}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    return str(path)


def _seconds(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:  # wrk prints what it could not measure oddly ("-nan"): no figure, no crash
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def wrk(url: str, connections: int, seconds: float, script: str, cpu: str) -> dict[str, float]:
    """One wrk run (one thread, pinned off the server's CPU): req/s, p99 latency, non-2xx.
    Answers are waited for up to 30 s (wrk's default, 2 s, counts a slow server's answers as
    timeouts: LiteLLM's proxy at 64 connections answers in 2-9 s on a loaded machine)."""
    out = subprocess.run(["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}",
                          f"-d{seconds:g}s", "--timeout", "30s", "--latency", "-s", script,
                          f"{url}/v1/chat/completions"],
                         capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    done = re.search(r"(\d+) requests in", out)
    return {"rps": rate, "p99": _seconds(p99.group(1)) if p99 else float("nan"),
            "bad": float(bad.group(1)) if bad else 0.0, "errors": errors.group(0) if errors else "",
            "requests": float(done.group(1)) if done else rate * seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each measured wrk run")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before measuring, each")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per contender")
    parser.add_argument("--litellm", nargs="?", const=default_proxy(), metavar="PATH",
                        help="add LiteLLM's proxy: the litellm command of an environment with "
                             "litellm[proxy] (default: $LITELLM_PROXY, else litellm beside "
                             "this Python)")
    parser.add_argument("--baseline", type=Path, metavar="ROOT",
                        help="add llmguard serve from another source tree (a checkout of the "
                             "commit to compare with): a before/after in the same interleaving")
    parser.add_argument("--proxy", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        run_proxy(int(args.proxy[0]), args.proxy[1])
        return
    if args.upstream:
        run_upstream(args.upstream)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench_gateway needs wrk: apt-get install -y wrk")
    server_cpu, other_cpus = cpus()
    procs: list[subprocess.Popen] = []
    urls: dict[str, tuple[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            port = free_port()
            upstream_proc = spawn([sys.executable, __file__, "--upstream", str(port)], other_cpus)
            procs.append(upstream_proc)
            upstream = f"http://127.0.0.1:{port}/v1"
            wait_up(f"http://127.0.0.1:{port}/healthz", upstream_proc)
            starters = {"bare proxy (Starlette + aiohttp)": lambda: start_proxy(upstream,
                                                                                 server_cpu),
                        GATEWAY: lambda: start_gateway(
                            tmp, upstream, server_cpu)}
            if args.baseline:
                starters[f"llmguard serve ({args.baseline.name})"] = lambda: start_gateway(
                    tmp, upstream, server_cpu, args.baseline.resolve())
            if args.litellm:
                starters["LiteLLM proxy"] = lambda: start_litellm(args.litellm, tmp, upstream,
                                                                  server_cpu)
            script = wrk_script(tmp)
            for name, start in starters.items():
                try:
                    proc, url = start()
                    procs.append(proc)
                    wait_up(f"{url}/v1/chat/completions", proc, data=json.dumps(BODY).encode(),
                            headers={"content-type": "application/json",
                                     "authorization": f"Bearer {KEY}"})
                except (RuntimeError, FileNotFoundError) as exc:
                    print(f"{name}: could not run: {exc}", file=sys.stderr)
                    continue
                urls[name] = (url, server_pid(proc))
                wrk(url, max(CONNECTIONS), args.warmup, script, other_cpus)  # the same warm-up
            runs: dict[tuple[str, int], list[dict[str, float]]] = {}
            names = list(urls)
            for repeat in range(args.repeats):
                order = names if repeat % 2 == 0 else names[::-1]
                print(f"  ... repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
                for connections in CONNECTIONS:
                    for name in order:
                        url, pid = urls[name]
                        before = cpu_seconds(pid)
                        result = wrk(url, connections, args.seconds, script, other_cpus)
                        result["cpu"] = (cpu_seconds(pid) - before) / max(result["requests"], 1)
                        runs.setdefault((name, connections), []).append(result)
        finally:
            for proc in reversed(procs):
                stop(proc)
    report(runs, names, args)


def report(runs: dict[tuple[str, int], list[dict[str, float]]], names: list[str],
           args: argparse.Namespace) -> None:
    base = names[0]
    print(f"\nOne fast upstream; each server on one CPU, wrk on another; {args.repeats} "
          f"interleaved runs of {args.seconds:g} s after {args.warmup:g} s of warm-up each; "
          "medians\n")
    print(f"| {'server':34} | conns | req/s | x bare proxy | CPU/request | p99 ms | non-2xx |")
    print(f"|{'-' * 36}|------:|------:|-------------:|------------:|-------:|--------:|")
    verdicts = []
    for connections in CONNECTIONS:
        for name in names:
            rows = runs[(name, connections)]
            rps = statistics.median(r["rps"] for r in rows)
            ratios = [r["rps"] / b["rps"] for r, b in zip(rows, runs[(base, connections)])]
            ratio = statistics.median(ratios)
            cpu = statistics.median(r["cpu"] for r in rows) * 1e6
            p99 = statistics.median(r["p99"] for r in rows) * 1e3
            bad = sum(r["bad"] for r in rows)
            print(f"| {name:34} | {connections:5} | {rps:5,.0f} | {ratio:11.2f}x "
                  f"| {cpu:8.0f} us | {p99:6.1f} | {bad:7.0f} |")
            if name == GATEWAY:
                verdicts.append((connections, ratio))
            errors = {r["errors"] for r in rows if r["errors"]}
            if errors:
                print(f"|   wrk: {'; '.join(sorted(errors))}")
    print("\nTarget (#36): llmguard serve with a tenant and its layers >= 0.8x the bare proxy's "
          "req/s:")
    for connections, ratio in verdicts:
        print(f"- {connections} connections: {ratio:.2f}x {'pass' if ratio >= 0.8 else 'MISS'}")
    for name in names:
        if name.startswith("llmguard serve (") and name != GATEWAY:  # --baseline
            for connections in CONNECTIONS:
                pairs = list(zip(runs[(GATEWAY, connections)], runs[(name, connections)]))
                rps, cpu, p99 = (statistics.median(a[k] / b[k] for a, b in pairs)
                                 for k in ("rps", "cpu", "p99"))
                print(f"- vs {name}, {connections} connections (medians of the per-pair "
                      f"ratios): req/s {rps:.2f}x, CPU/request {cpu:.2f}x, p99 {p99:.2f}x")
    lite = "LiteLLM proxy"
    if lite in names:
        for connections in CONNECTIONS:
            mine = [r["rps"] for r in runs[(GATEWAY, connections)]]
            theirs = [r["rps"] for r in runs[(lite, connections)]]
            ratio = statistics.median(a / b for a, b in zip(mine, theirs))
            print(f"- vs LiteLLM's proxy, {connections} connections: llmguard serve is "
                  f"{ratio:.1f}x its req/s")


if __name__ == "__main__":
    main()
