"""`llmguard run` against the OpenAI cookbook's api_request_parallel_processor approach, on three
rate-limited servers, plus what an interrupt and a kill cost.

One 10,000-request JSONL file and one loopback OpenAI-compatible HTTP server (127.0.0.1 only)
that enforces RPM and TPM the way providers do, in three shapes:

* **sliding window**: ``llmguard.testing.SimulatedProvider``, requests and tokens admitted in
  the last window (429 with ``retry-after`` when a request would exceed either);
* **token bucket**: ``llmguard.testing.TokenBucketServer``, buckets refilling continuously,
  charging the prompt estimate plus ``max_tokens`` up front (OpenAI's accounting), with
  OpenAI's ``x-ratelimit-*`` headers on every answer;
* **fixed window**: ``llmguard.testing.FixedWindowServer``, counters keyed by the clock window,
  counted at arrival (what many gateways do).

Three clients, each given the server's quota as its rpm/tpm:

* ``llmguard run`` with ``--api-base`` pointing at the server;
* the cookbook approach at 100% of the quota: capacity tracked by estimate (requests and
  tiktoken-counted tokens refilled continuously, starting full), no backoff, and after any 429
  every request waits a fixed pause (15 s in the cookbook) before the next is sent;
* the same at the cookbook's recommended 50% of the quota (its own advice to avoid 429s).

Then an independent server from the package registries, LiteLLM's proxy with ``mock_response``
and per-deployment ``rpm``/``tpm`` (``usage-based-routing-v2`` refuses a request over the
deployment's limits with 429), in real time: its windows are clock minutes. It runs from a
separate environment (``--litellm PATH``: the ``litellm`` command of a ``pip install
'litellm[proxy]'``; its extras pin another litellm than the project's venv). Without one, the
table says so. ``llmguard run`` there has its defaults (limits learned, or ``--rpm``), starts
``--litellm-phase`` s into a clock minute (40), and the ideal goes at the proxy's own pace,
measured first on a deployment whose limits are never reached.

``--mocklimit PATH`` (the ``mocklimit`` command of a ``pip install mocklimit``: an independent
rate-limited mock API server) adds its fixed window, sliding window and token bucket to the
defaults table below (``--mocklimit-learned``: also with only ``--api-base``), each run
``--repeats`` times (a row a run).

``--defaults fixed,bucket,sliding,proxy`` adds ``llmguard run`` with default settings (only
``--api-base``, ``--rpm 60``, ``--tpm 100000``) on every shape with real 60 s windows, including
``llmguard.testing.ProxyWindowServer`` (LiteLLM's proxy: ``rpm - 1`` per wall-clock minute, no
reset header), 180 lines (3x the quota) started about 40 s into the server's minute, in real
time (about 3 minutes a shape); the ideal is the server's own ``ideal_time``.

Last, the interrupt and kill counts, on the token-bucket server: ``llmguard run`` stopped a
third of the way by SIGINT (then by ``kill -9``) and resumed, counting at the server the
requests it received and the lines it answered (paid) more than once.

Time is compressed 10x so the comparison takes a few minutes: the servers enforce the quota over
6 s windows (a tenth of the per-minute quota per window) instead of 60 s, and the cookbook's
minute and its 15 s pause are compressed alike (6 s, 1.5 s). llmguard gets the same quota as
per-minute rates with ``--burst 0.1`` (hold a tenth of it per 6 s: the window the provider
enforces, as OpenAI enforces per-minute quotas over shorter periods) and its default 0.5 s
``--margin`` compressed alike (0.05 s). The servers count a request's tokens as prompt (4
characters a token) plus ``max_tokens``; llmguard and the cookbook estimate with tiktoken, as
they do against OpenAI, so like any client their estimates differ from the server's count.

Wall time is measured on the server, from the first request to the last answer; the ideal is
the soonest the server's own quota policy lets the same requests through, in the order they
came, from the first arrival (greedy admission, plus one request's service time). 429s are a
share of the requests the server received.

    python benchmarks/bench_cli.py [--requests 10000] [--repeats 3] [--litellm PATH]
    python benchmarks/bench_cli.py --servers none --no-interrupts --defaults fixed,bucket,sliding,proxy
    python benchmarks/bench_cli.py --servers none --no-interrupts --litellm PATH --mocklimit PATH
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALE = 10  #: time compression: a 60 s quota window becomes 6 s
WINDOW = 60 / SCALE
RPM = 24_000  #: 2,400 requests per 6 s window: 400 requests/s
TPM = 3_000_000  #: 300,000 tokens per 6 s window: 50,000 tokens/s
LATENCY = 0.05  #: server latency per request (s), plus 0.5 ms per output token
SERVICE = LATENCY + 0.0005 * 65  #: one request's mean service time (10 to 120 output tokens)
PAUSE = 15 / SCALE  #: the cookbook's fixed pause after a 429, scaled like the window
KINDS = {"sliding": "sliding window", "bucket": "token bucket", "fixed": "fixed window"}
#: The defaults table (real time, per-minute quotas): rpm, tpm, latency, lines (3x the quota),
#: and when in the server's minute the batch starts.
MINUTE_RPM, MINUTE_TPM, MINUTE_LATENCY, MINUTE_LINES, MINUTE_PHASE = 60, 100_000, 2.0, 180, 40.0
MINUTE_KINDS = {"fixed": "fixed window", "bucket": "token bucket", "sliding": "sliding window",
                "proxy": "clock-minute proxy (rpm - 1)"}
#: LiteLLM's proxy (real time): quota per clock minute and the lines sent through it.
LITELLM_RPM, LITELLM_TPM, LITELLM_LINES = 1200, 10_000_000, 2400
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # a loopback proxy's, not a secret


# --------------------------------------------------------------------------- the servers


def ideal_time(kind: str, charges: list[int], start: float) -> float:
    """Seconds from ``start`` until the last of these requests (their token charges, in order)
    is answered at the soonest the ``kind`` of quota admits them (greedy)."""
    from llmguard.testing._quota import FixedWindow, TokenBucket

    rpm, tpm = RPM // SCALE, TPM // SCALE
    t = start
    if kind == "sliding":
        admitted: deque[tuple[float, int]] = deque()
        tokens = 0
        for charge in charges:
            while True:
                while admitted and admitted[0][0] + WINDOW <= t:
                    tokens -= admitted.popleft()[1]
                if len(admitted) < rpm and tokens + charge <= tpm:
                    break
                t = admitted[0][0] + WINDOW
            admitted.append((t, charge))
            tokens += charge
        return t - start + SERVICE
    if kind == "bucket":
        quotas = (TokenBucket(rpm, WINDOW), TokenBucket(tpm, WINDOW))
    else:
        quotas = (FixedWindow(rpm, WINDOW), FixedWindow(tpm, WINDOW))
    for charge in charges:
        for _ in range(3):  # a wait on one quota may need one more on the other
            wait = max(q.wait(t, n) for q, n in zip(quotas, (1, charge)))
            if wait <= 0:
                break
            t += wait + 1e-9
        for q, n in zip(quotas, (1, charge)):
            q.take(t, n)
    return t - start + SERVICE


def serve(port: int) -> None:
    """The simulated providers over HTTP.

    ``POST /reset?kind=K&share=F`` starts a fresh server of kind K (sliding, bucket, fixed),
    with another consumer (not counted in the stats) using the fraction F of its quota at a
    steady rate; ``GET /stats`` reports the client's requests only.
    """
    from aiohttp import web

    from llmguard import estimate_tokens
    from llmguard.testing import (
        FixedWindowServer,
        ProviderError,
        ProxyWindowServer,
        SimulatedProvider,
        SlidingWindowServer,
        TokenBucketServer,
    )
    from llmguard.testing._servers import admission_headers

    state: dict = {}

    async def other_consumer(sim: SimulatedProvider, share: float) -> None:
        # Requests of the average charged size, at `share` of the request rate.
        request = {"messages": [{"role": "user", "content": "x"}], "max_tokens": TPM // RPM - 8}
        interval = 60 / (RPM * share)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        tasks: set[asyncio.Task] = set()

        async def one() -> None:
            with contextlib.suppress(ProviderError):  # it is refused like anyone else
                await sim.acompletion(**request)

        while True:
            next_at += interval
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def fresh(kind: str, share: float, minute: bool = False) -> None:
        if state.get("background"):
            state["background"].cancel()
        if minute:  # the defaults table: real per-minute quotas, every shape
            sim = {"sliding": SlidingWindowServer, "bucket": TokenBucketServer,
                   "fixed": FixedWindowServer, "proxy": ProxyWindowServer}[kind](
                capacity=4096, latency=MINUTE_LATENCY, rpm=MINUTE_RPM, tpm=MINUTE_TPM,
                output_tokens=20)
            state.update(kind=kind, sim=sim, background=None, first=None, last=None, charges=[],
                         arrivals=0, rate_limited=0, answered=Counter(), minute=True)
            return
        options = dict(capacity=4096, latency=LATENCY, seconds_per_output_token=0.0005,
                       rpm=RPM // SCALE, tpm=TPM // SCALE, window=WINDOW,
                       output_tokens=lambda rng, kw: rng.randint(10, 120))
        sim = {"sliding": SimulatedProvider, "bucket": TokenBucketServer,
               "fixed": FixedWindowServer}[kind](**options)
        background = asyncio.ensure_future(other_consumer(sim, share)) if share else None
        state.update(kind=kind, sim=sim, background=background, first=None, last=None,
                     charges=[], arrivals=0, rate_limited=0, answered=Counter(), minute=False)

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        now = asyncio.get_running_loop().time()
        if state["first"] is None:
            state["first"] = now
            state["first_phase"] = phase_now()
        state["arrivals"] += 1
        admission_headers.set(None)
        try:
            result = await state["sim"].acompletion(**body)
        except ProviderError as exc:
            state["rate_limited"] += exc.status_code == 429
            kind = "rate_limit_error" if exc.status_code == 429 else "server_error"
            return web.json_response({"error": {"message": str(exc), "type": kind, "code": None}},
                                     status=exc.status_code, headers=exc.headers)
        state["last"] = asyncio.get_running_loop().time()
        state["charges"].append(estimate_tokens(messages=body["messages"],
                                                max_tokens=body.get("max_tokens", 0)))
        state["answered"][body["messages"][-1]["content"].split(" ", 1)[0]] += 1
        result.update(id=f"chatcmpl-{len(state['charges'])}", created=int(time.time()))
        return web.json_response(result, headers=admission_headers.get() or {})

    async def stats(request: web.Request) -> web.Response:
        served, first = len(state["charges"]), state["first"] or 0
        if state["minute"] and served:
            charge = round(sum(state["charges"]) / served)
            ideal = state["sim"].ideal_time(served, tokens=charge, start=first)
        else:
            ideal = (ideal_time(state["kind"], state["charges"], first)
                     if served and not state["background"] else None)
        return web.json_response({
            "served": served, "arrivals": state["arrivals"], "rate_limited": state["rate_limited"],
            "charged": sum(state["charges"]), "wall": (state["last"] or first) - first,
            "ideal": ideal,
            "duplicates": sum(n - 1 for n in state["answered"].values() if n > 1),
            "phase": state.get("first_phase"), "shape": phase_now()})

    def phase_now() -> float:
        """Seconds into the server's minute (a wall-clock minute for the proxy)."""
        sim = state["sim"]
        if isinstance(sim, ProxyWindowServer):
            return sim.phase()
        return asyncio.get_running_loop().time() % 60

    async def phase(request: web.Request) -> web.Response:
        return web.json_response({"phase": phase_now()})

    async def reset(request: web.Request) -> web.Response:
        fresh(request.query.get("kind", "sliding"), float(request.query.get("share", 0)),
              request.query.get("minute") == "1")
        return web.json_response({})

    async def start(app: web.Application) -> None:
        fresh("sliding", 0.0)

    app = web.Application()
    app.on_startup.append(start)
    app.add_routes([web.post("/v1/chat/completions", completions), web.get("/stats", stats),
                    web.post("/reset", reset), web.get("/phase", phase)])
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --------------------------------------------------------------------------- the cookbook


def cookbook(path: str, out: str, url: str, rpm: float, tpm: float) -> None:
    """The cookbook's api_request_parallel_processor logic, re-implemented (not copied).

    Its minute is scaled like the server's window: capacity refills at ``rpm`` per WINDOW
    seconds and is capped at one (scaled) minute's worth, ``rpm / SCALE``.
    """
    rpm, tpm = rpm / SCALE, tpm / SCALE
    litellm_dir = Path(importlib.util.find_spec("litellm").origin).parent  # type: ignore[union-attr]
    # tiktoken's cl100k_base, offline: litellm ships the cached encoding file.
    os.environ.setdefault("TIKTOKEN_CACHE_DIR",
                          str(litellm_dir / "litellm_core_utils" / "tokenizers"))
    import aiohttp
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base")

    def tokens_of(request: dict) -> int:  # the cookbook's chat-completions estimate
        n = 2
        for message in request["messages"]:
            n += 4 + sum(len(encoding.encode(str(v))) for v in message.values())
        return n + request.get("max_tokens", 15) * request.get("n", 1)

    async def main() -> None:
        retry_queue: asyncio.Queue = asyncio.Queue()
        state = {"in_progress": 0, "last_429": 0.0, "rate_limited": 0}
        requests_left, tokens_left = rpm, tpm
        last_update = time.time()
        pending = None
        lines = open(path)
        exhausted = False
        results = open(out, "w")

        async def call(session: aiohttp.ClientSession, task: dict) -> None:
            error = None
            try:
                async with session.post(url, json=task["request"],
                                        headers={"Authorization": "Bearer sk-bench"}) as resp:
                    body = await resp.json()
                if "error" in body:
                    error = body
                    if "rate limit" in body["error"].get("message", "").lower():
                        state["last_429"] = time.time()
                        state["rate_limited"] += 1
            except Exception as exc:  # the cookbook catches everything and retries
                error = {"error": str(exc)}
            if error is not None and task["attempts_left"]:
                retry_queue.put_nowait(task)
            else:
                results.write(json.dumps([task["request"], error or body]) + "\n")
                state["in_progress"] -= 1

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            while True:
                if pending is None:
                    if not retry_queue.empty():
                        pending = retry_queue.get_nowait()
                    elif not exhausted:
                        line = lines.readline()
                        if line:
                            request = json.loads(line)
                            pending = {"request": request, "tokens": tokens_of(request),
                                       "attempts_left": 5}
                            state["in_progress"] += 1
                        else:
                            exhausted = True
                now = time.time()
                elapsed, last_update = now - last_update, now
                requests_left = min(requests_left + rpm * elapsed / WINDOW, rpm)
                tokens_left = min(tokens_left + tpm * elapsed / WINDOW, tpm)
                if pending is not None and requests_left >= 1 and tokens_left >= pending["tokens"]:
                    requests_left -= 1
                    tokens_left -= pending["tokens"]
                    pending["attempts_left"] -= 1
                    asyncio.create_task(call(session, pending))
                    pending = None
                if exhausted and state["in_progress"] == 0:
                    break
                await asyncio.sleep(0.001)
                cooldown = PAUSE - (time.time() - state["last_429"])
                if cooldown > 0:  # every request waits out the fixed pause after any 429
                    await asyncio.sleep(cooldown)
        results.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- the comparison


def make_requests(path: Path, n: int) -> None:
    """``n`` chat requests; each prompt starts with its own ``#i`` so the server can tell a
    line answered twice."""
    rng = random.Random(42)
    words = "the quick brown fox jumps over a lazy dog while llms answer politely".split()
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 120)))
            f.write(json.dumps({"model": "sim", "max_tokens": rng.randint(20, 120),
                                "messages": [{"role": "user", "content": f"#{i} {text}"}]})
                    + "\n")


def http(port: int, method: str, path: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if
                                 method == "POST" else None)
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def wait_until_up(process: subprocess.Popen, port: int, path: str, name: str, log: Path,
                  seconds: float) -> None:
    """Poll ``GET path`` on ``port`` until it answers; exit with the log's tail if the server
    process exits first (up to ``seconds``)."""
    for _ in range(int(seconds * 10)):
        with contextlib.suppress(OSError):
            http(port, "GET", path)
            return
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def records(path: Path) -> list:
    """Whole records of an output file (a kill may leave the last line torn)."""
    out = []
    with path.open() as f:
        for line in f:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def failed_lines(path: Path) -> int:
    """Lines that ended as an error: llmguard records, or the cookbook's [request, error]."""
    return sum(not r["ok"] if isinstance(r, dict) else "error" in r[1] for r in records(path))


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-bench"}


def run_client(name: str, cmd: list[str], out: Path, port: int, kind: str,
               share: float) -> dict:
    http(port, "POST", f"/reset?kind={kind}&share={share}")
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stats = http(port, "GET", "/stats")
    return {**stats, "name": name, "server": KINDS[kind], "done": len(records(out)),
            "failed": failed_lines(out)}


def interrupted(how: str, cmd: list[str], out: Path, port: int, n: int) -> dict:
    """``llmguard run`` stopped by ``how`` (SIGINT or SIGKILL) once a third of the lines are
    answered, then resumed; counted at the token-bucket server."""
    http(port, "POST", "/reset?kind=bucket")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    while proc.poll() is None and http(port, "GET", "/stats")["served"] < n // 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT if how == "SIGINT" else signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    expected = 130 if how == "SIGINT" else -signal.SIGKILL
    if proc.returncode != expected and proc.returncode != 0:
        raise SystemExit(f"the {how}ed run ended {proc.returncode}:\n{err[-3000:]}")
    time.sleep(0.2)  # answers of requests that reached the server before the kill
    at_stop = http(port, "GET", "/stats")
    written = len(records(out))
    resume = [a for a in cmd if a != "--overwrite"] + ["--resume"]
    again = subprocess.run(resume, env=env(), capture_output=True, text=True, timeout=900)
    if again.returncode not in (0, 1):
        raise SystemExit(f"resume after {how} failed ({again.returncode}):\n{again.stderr[-3000:]}")
    stats = http(port, "GET", "/stats")
    return {**stats, "name": f"{how} at 1/3, then --resume", "done": len(records(out)),
            "failed": failed_lines(out), "paid_at_stop": at_stop["served"],
            "written_at_stop": written}


def defaults_rows(port: int, tmp: Path, kinds: list[str]) -> list[dict]:
    """``llmguard run --api-base URL --rpm 60 --tpm 100000``, nothing else set, 180 lines (3x
    the quota) started ``MINUTE_PHASE`` s into the server's minute, on every shape, in real
    time; the ideal is the server's own (``QuotaServer.ideal_time``)."""
    src, out = tmp / "minute.jsonl", tmp / "minute_out.jsonl"
    with src.open("w") as f:
        for i in range(MINUTE_LINES):
            f.write(json.dumps({"model": "sim", "max_tokens": 20, "messages": [
                {"role": "user", "content": f"#{i} a short question number {i}"}]}) + "\n")
    cmd = [sys.executable, "-m", "llmguard", "run", str(src), "-o", str(out), "--overwrite",
           "--no-progress", "--model", "sim", "--api-base", f"http://127.0.0.1:{port}/v1",
           "--rpm", str(MINUTE_RPM), "--tpm", str(MINUTE_TPM)]
    rows = []
    for kind in kinds:
        http(port, "POST", f"/reset?kind={kind}&minute=1")
        wait = (MINUTE_PHASE - 1.0 - http(port, "GET", "/phase")["phase"]) % 60  # ~1 s to start
        time.sleep(wait)
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"llmguard run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        stats = http(port, "GET", "/stats")
        rows.append({**stats, "name": "`llmguard run` (defaults)", "server": MINUTE_KINDS[kind],
                     "done": len(records(out)), "failed": failed_lines(out)})
    return rows


# --------------------------------------------------------------------------- LiteLLM's proxy


def litellm_proxy(litellm: str, tmp: Path, src: Path, runs: list[tuple[str, list[str]]],
                  repeats: int, phase: float) -> list[dict]:
    """Each of ``runs`` (name, extra ``llmguard run`` options, otherwise its defaults) against a
    fresh LiteLLM proxy serving a ``mock_response`` deployment with rpm/tpm limits, started
    ``phase`` s into a clock minute, counted from the proxy's access log.

    The proxy also serves ``free``, the same mock with limits it never reaches (the same code
    path in the router): ``len(src)`` lines sent there just before and just after each run
    (1,024 in flight, what the rate-limited runs get) measure the proxy's own pace, the mean
    of the two (the machine's other load changes from minute to minute: one measurement
    before the run alone put the ideal 14% above a run's wall time)."""
    config = tmp / "litellm.yaml"
    mock = "      api_key: sk-mock\n      mock_response: \"ok\"\n"
    config.write_text(
        "model_list:\n  - model_name: sim\n    litellm_params:\n      model: openai/sim\n"
        f"{mock}      rpm: {LITELLM_RPM}\n      tpm: {LITELLM_TPM}\n"
        f"  - model_name: free\n    litellm_params:\n      model: openai/free\n{mock}"
        "      rpm: 100000000\n      tpm: 10000000000\n"
        "router_settings:\n  routing_strategy: usage-based-routing-v2\n"
        "  enable_pre_call_checks: true\nlitellm_settings:\n  num_retries: 0\n")
    rows = []
    for name, options in runs:
        for _ in range(repeats):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            log = tmp / f"litellm_{len(rows)}.log"  # each run's kept for reading
            proxy = subprocess.Popen(
                [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                 "--num_workers", "1"],
                env={**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY,
                     "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                stdout=log.open("w"), stderr=subprocess.STDOUT)
            try:
                wait_until_up(proxy, port, "/health/liveliness", "LiteLLM's proxy", log, 120)
                # the run's records and the pace's apart (the run's stay for reading)
                out, spare = tmp / "litellm.jsonl", tmp / "litellm_free.jsonl"
                cmd, free = ([sys.executable, "-m", "llmguard", "run", str(src), "-o", str(path),
                              "--overwrite", "--no-progress", "--api-base",
                              f"http://127.0.0.1:{port}/v1", "--api-key-env", "BENCH_PROXY_KEY"]
                             for path in (out, spare))
                free += ["--model", "free", "--rpm", "100000000", "--tpm", "10000000000",
                         "--concurrency", "1024"]
                run_env = {**env(), "BENCH_PROXY_KEY": MASTER_KEY}
                pace = subprocess.run(free, env=run_env, capture_output=True, text=True,
                                      timeout=1800)
                paced = len(records(spare))  # all 200s: the proxy's log counts them too
                before = run_wall(pace) / paced
                time.sleep((phase - time.time()) % 60)
                load = os.getloadavg()[0]
                done = subprocess.run([*cmd, "--model", "sim", *options], env=run_env,
                                      capture_output=True, text=True, timeout=1800)
                ended = time.time()
                if done.returncode not in (0, 1):
                    raise SystemExit(f"llmguard run against LiteLLM failed:\n{done.stderr}")
                (tmp / f"litellm_{len(rows)}.out").write_text(done.stdout + done.stderr)
                got = records(out)
                pace = subprocess.run(free, env=run_env, capture_output=True, text=True,
                                      timeout=1800)
                after = run_wall(pace) / len(records(spare))
                paced += len(records(spare))
                gap = (before + after) / 2
            finally:
                proxy.terminate()
                proxy.wait(timeout=60)
            codes = Counter(re.findall(r'"POST /v1/chat/completions HTTP/1.1" (\d+)',
                                       log.read_text()))
            wall = run_wall(done)
            start = ended - wall  # the run's first request, about (clock minutes matter)
            rows.append({"name": name, "server": "LiteLLM proxy (real time)",
                         "phase": start % 60, "gap": gap, "paces": (before, after),
                         "load": load,
                         "done": len(got), "failed": sum(not r["ok"] for r in got),
                         "arrivals": sum(codes.values()) - paced,
                         "rate_limited": codes.get("429", 0),
                         "served": codes.get("200", 0) - paced, "wall": wall,
                         "ideal": litellm_ideal(len(got), start, gap),
                         "duplicates": None})
    return rows


def run_wall(proc: subprocess.CompletedProcess) -> float:
    """The wall time ``llmguard run`` reports in its summary."""
    return float(re.search(r"wall time\s+([\d.]+) s", proc.stdout).group(1))


def litellm_ideal(n: int, start: float, gap: float) -> float:
    """The soonest LiteLLM's proxy can answer ``n`` requests from ``start``: it counts them
    per clock minute (unix time), refusing the one that would reach ``rpm`` (``rpm - 1`` get
    through a minute, as measured here), and its one event loop spends ``gap`` s on each (its
    own pace, measured without limits). At best each minute's quota is counted at its start
    (the loop counts a request seconds before it answers it: the 1,024 sent at once were all
    counted within 14 s, answered within 22 s) and the loop never idles while it holds
    counted work. Spacing the counts ``gap`` apart instead overstated the ideal (a run took
    0.86x of it): this one is a bound no client beats."""
    from llmguard.testing._quota import FixedWindow

    quota, at, busy = FixedWindow(LITELLM_RPM - 1, 60.0), start, start
    for _ in range(n):
        at += quota.wait(at, 1)
        quota.take(at, 1)
        busy = max(busy, at) + gap  # served once counted and the loop is free
    return busy - start


# --------------------------------------------------------------------------- mocklimit

#: mocklimit's strategies, as the shapes of the defaults table.
MOCKLIMIT_SHAPES = {"fixed_window": "fixed", "sliding_window": "sliding",
                    "token_bucket": "bucket"}

MOCKLIMIT_SPEC = """\
openapi: 3.0.0
info: {title: chat completions, version: "1"}
servers: [{url: "http://127.0.0.1/v1"}]
paths:
  /chat/completions:
    post:
      responses:
        "200":
          description: a chat completion
          content:
            application/json:
              schema:
                type: object
                properties:
                  id: {type: string}
                  object: {type: string, enum: [chat.completion]}
                  created: {type: integer}
                  model: {type: string}
                  choices:
                    type: array
                    items:
                      type: object
                      properties:
                        index: {type: integer, enum: [0]}
                        finish_reason: {type: string, enum: [stop]}
                        message:
                          type: object
                          properties:
                            role: {type: string, enum: [assistant]}
                            content: {type: string}
"""


def mocklimit_config(strategy: str) -> str:
    """A rate config for ``mocklimit serve``: OpenAI's headers, reset as a Go duration and
    ``retry-after-ms`` (its README's OpenAI example), the defaults table's quotas and latency,
    tokens counted as the body's characters / 4 plus 20-120 output tokens."""
    limits = []
    for dimension, quota in (("requests", MINUTE_RPM), ("tokens", MINUTE_TPM)):
        size = (f"capacity: {quota}\n        refill_rate: {quota / 60:.4f}"
                if strategy == "token_bucket" else f"limit: {quota}\n        window_seconds: 60")
        limits.append(
            f"      - dimension: {dimension}\n        {size}\n        headers:\n"
            f"          limit: x-ratelimit-limit-{dimension}\n"
            f"          remaining: x-ratelimit-remaining-{dimension}\n"
            f"          reset: x-ratelimit-reset-{dimension}\n")
    ms = int(MINUTE_LATENCY * 1000)
    return (f"policies:\n  chat:\n    strategy: {strategy}\n    limits:\n{''.join(limits)}"
            "    scope: api_key\n    format:\n      reset: go_duration\n"
            "      retry_after: {header: retry-after-ms, unit: milliseconds}\n"
            "    error_template: {provider: openai}\n"
            "endpoints:\n  /chat/completions:\n    methods: [POST]\n    policy: chat\n"
            "    resources:\n"
            "      requests: {input: {strategy: fixed, value: 1}, "
            "output: {strategy: fixed, value: 0}}\n"
            "      tokens: {input: {strategy: characters_div_4}, "
            "output: {strategy: random, range: [20, 120]}}\n"
            f"    timing: {{base_ms: [{ms}, {ms}]}}\n")


def mocklimit_rows(mocklimit: str, tmp: Path, phase: float, learned: bool,
                   repeats: int = 1) -> list[dict]:
    """``llmguard run`` with default settings against mocklimit (an independent rate-limited
    mock API server from the package registries) in each of its strategies, started ``phase`` s
    into a clock minute, counted by the server's ``/mocklimit/stats``; given the quotas, and with
    ``learned`` also with only ``--api-base`` (the quotas learned from its headers); each run
    ``repeats`` times, one row a run (a fresh server each: its counters start empty)."""
    from llmguard.testing import SlidingWindowServer, TokenBucketServer
    from llmguard.testing import FixedWindowServer

    spec, src, out = tmp / "mocklimit.yaml", tmp / "mocklimit.jsonl", tmp / "mocklimit_out.jsonl"
    spec.write_text(MOCKLIMIT_SPEC)
    make_requests(src, MINUTE_LINES)
    rows = []
    quotas = [("", ["--rpm", str(MINUTE_RPM), "--tpm", str(MINUTE_TPM)])]
    if learned:
        quotas.append((", limits learned", []))
    for (strategy, shape), (how, options), n in itertools.product(
            MOCKLIMIT_SHAPES.items(), quotas, range(repeats)):
        config = tmp / f"mocklimit_{strategy}.yaml"
        config.write_text(mocklimit_config(strategy))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        run = f"{strategy}{bool(options)}_{n}"  # the run's log and output kept for reading
        log = tmp / f"mocklimit_{run}.log"
        server = subprocess.Popen(
            [mocklimit, "serve", "--spec", str(spec), "--rate-config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_until_up(server, port, "/mocklimit/stats", "mocklimit", log, 60)
            time.sleep((phase - time.time()) % 60)
            done = subprocess.run(
                [sys.executable, "-m", "llmguard", "run", str(src), "-o", str(out),
                 "--overwrite", "--no-progress", "--model", "sim", "--api-base",
                 f"http://127.0.0.1:{port}/v1", "--api-key-env", "BENCH_PROXY_KEY", *options],
                env={**env(), "BENCH_PROXY_KEY": MASTER_KEY}, capture_output=True, text=True,
                timeout=1800)
            ended = time.time()
            if done.returncode not in (0, 1):
                raise SystemExit(f"llmguard run against mocklimit failed:\n{done.stderr}")
            (tmp / f"mocklimit_{run}.out").write_text(done.stdout + done.stderr)
            stats = http(port, "GET", "/mocklimit/stats")
        finally:
            server.terminate()
            server.wait(timeout=60)
        counts = [c for per_key in stats.values() if isinstance(per_key, dict)
                  for c in per_key.values() if isinstance(c, dict)]
        arrivals = sum(c.get("total_requests", 0) for c in counts)
        limited = sum(c.get("total_429s", 0) for c in counts)
        wall = run_wall(done)
        start = ended - wall  # the run's first request, about (clock minutes matter)
        yardstick = {"fixed": FixedWindowServer, "sliding": SlidingWindowServer,
                     "bucket": TokenBucketServer}[shape](
            rpm=MINUTE_RPM, tpm=MINUTE_TPM, latency=MINUTE_LATENCY, output_tokens=0)
        got = records(out)
        rows.append({"server": f"mocklimit {strategy}{how}", "phase": start % 60,
                     "done": len(got), "failed": sum(not r["ok"] for r in got),
                     "arrivals": arrivals, "rate_limited": limited, "wall": wall,
                     "ideal": yardstick.ideal_time(len(got), start=start)})
    return rows


# --------------------------------------------------------------------------- main


def pct(part: float, whole: float) -> str:
    return f"{part / whole:.2%}" if whole else "-"


def median_row(rows: list[dict]) -> dict:
    """The repeat with the median wall time (its counts kept together)."""
    ordered = sorted(rows, key=lambda r: r["wall"])
    return {**ordered[len(ordered) // 2], "repeats": len(rows),
            "rate_limited_all": [r["rate_limited"] for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each row; the table shows the median by wall time")
    parser.add_argument("--servers", default="sliding,bucket,fixed",
                        help="comma-separated: sliding, bucket, fixed (none: only LiteLLM)")
    parser.add_argument("--clients", default="llmguard,continuous,cookbook,cookbook50",
                        help="comma-separated: llmguard, continuous (llmguard with --refill "
                             "continuous), cookbook (100%% quota), cookbook50")
    parser.add_argument("--share", type=float, default=0.0,
                        help="fraction of the sliding window's quota another consumer uses "
                             "meanwhile (0 to 0.9)")
    parser.add_argument("--litellm", metavar="PATH",
                        help="the litellm command of an environment with litellm[proxy]")
    parser.add_argument("--litellm-lines", type=int, default=LITELLM_LINES)
    parser.add_argument("--litellm-phase", type=float, default=MINUTE_PHASE,
                        help="seconds into a clock minute each run through LiteLLM starts "
                             "(default %(default)s)")
    parser.add_argument("--mocklimit", metavar="PATH",
                        help="the mocklimit command of an environment with mocklimit "
                             "installed: adds its fixed window, sliding window and token "
                             "bucket to the defaults table (real time, about 3 minutes each)")
    parser.add_argument("--mocklimit-learned", action="store_true",
                        help="with --mocklimit, also run each with only --api-base (limits "
                             "learned from its headers)")
    parser.add_argument("--no-interrupts", action="store_true",
                        help="skip the SIGINT and kill -9 runs")
    parser.add_argument("--defaults", default="",
                        help="comma-separated shapes for the defaults table (real time, about "
                             "3 minutes each): fixed, bucket, sliding, proxy; e.g. "
                             "--defaults fixed,bucket,sliding,proxy")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cookbook", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.cookbook:
        path, out, url, rpm, tpm = args.cookbook
        return cookbook(path, out, url, float(rpm), float(tpm))
    if not 0 <= args.share <= 0.9:
        raise SystemExit(f"--share must be between 0 and 0.9, got {args.share}")
    kinds = [k.strip() for k in args.servers.split(",") if k.strip() not in ("", "none")]
    if any(k not in KINDS for k in kinds):
        raise SystemExit(f"--servers takes {', '.join(KINDS)}; got {args.servers!r}")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    src = tmp / "requests.jsonl"
    make_requests(src, args.requests)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    me = [sys.executable, __file__, "--cookbook", str(src), str(tmp / "cookbook.jsonl"), url]
    lg = [sys.executable, "-m", "llmguard", "run", str(src), "-o", str(tmp / "lg.jsonl"),
          "--overwrite", "--no-progress", "--model", "sim", "--api-base",
          f"http://127.0.0.1:{port}/v1", "--rpm", str(RPM), "--tpm", str(TPM),
          "--burst", str(1 / SCALE), "--margin", str(0.5 / SCALE),
          "--concurrency", "64", "--retries", "5"]
    clients = {"llmguard": ("llmguard run", lg, tmp / "lg.jsonl"),
               "continuous": ("llmguard run --refill continuous",
                              [*lg, "--refill", "continuous"], tmp / "lg.jsonl"),
               "cookbook": ("cookbook, 100% quota", [*me, str(RPM), str(TPM)],
                            tmp / "cookbook.jsonl"),
               "cookbook50": ("cookbook, 50% quota", [*me, str(RPM / 2), str(TPM / 2)],
                              tmp / "cookbook.jsonl")}
    chosen = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not chosen or any(c not in clients for c in chosen):
        raise SystemExit(f"--clients takes {', '.join(clients)}; got {args.clients!r}")
    rows, stops, minute_rows = [], [], []
    try:
        for _ in range(200):
            try:
                http(port, "GET", "/stats")
                break
            except OSError:
                time.sleep(0.05)
        for kind in kinds:
            share = args.share if kind == "sliding" else 0.0
            for name, cmd, out in (clients[c] for c in chosen):
                rows.append(median_row([run_client(name, cmd, out, port, kind, share)
                                        for _ in range(args.repeats)]))
        if not args.no_interrupts:
            stops = [interrupted(how, lg, tmp / "lg.jsonl", port, args.requests)
                     for how in ("SIGINT", "SIGKILL")]
        minute_kinds = [k.strip() for k in args.defaults.split(",") if k.strip()]
        if any(k not in MINUTE_KINDS for k in minute_kinds):
            raise SystemExit(f"--defaults takes {', '.join(MINUTE_KINDS)}; got {args.defaults!r}")
        minute_rows = defaults_rows(port, tmp, minute_kinds)
        if args.mocklimit:
            minute_rows += mocklimit_rows(args.mocklimit, tmp, MINUTE_PHASE,
                                          args.mocklimit_learned, args.repeats)
    finally:
        server.terminate()
        server.wait()
    note, lite_rows = None, []
    if args.litellm:
        lite_src = tmp / "litellm_requests.jsonl"
        make_requests(lite_src, args.litellm_lines)
        lite_rows = [median_row([r]) for r in litellm_proxy(
            args.litellm, tmp, lite_src,
            [("llmguard run, limits learned", []),
             ("llmguard run --rpm", ["--rpm", str(LITELLM_RPM)])], args.repeats,
            args.litellm_phase)]
    else:
        note = ("LiteLLM's proxy: not run (pass --litellm PATH: the litellm command of an "
                "environment with 'litellm[proxy]' installed)")

    print(f"\n{args.requests:,} requests; quota {RPM:,} rpm / {TPM:,} tpm over {WINDOW:g} s "
          f"windows (time compressed {SCALE}x; cookbook pause {PAUSE:g} s)"
          + (f"; on the sliding window another consumer uses {args.share:.0%} of it"
             if args.share else "")
          + (f"; median of {args.repeats} runs by wall time" if args.repeats > 1 else ""))
    print("ideal: the soonest the server's own quota admits the same requests from the first "
          "arrival, plus one service time; 429s: share of the requests the server received\n")
    print("| server | client | lines done | failed | 429s (% of requests) | wall s | "
          "wall / ideal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['wall'] / r['ideal']:.2f}x" if r.get("ideal") else "-"
        spread = (f" [{', '.join(map(str, r['rate_limited_all']))}]"
                  if r.get("repeats", 1) > 1 else "")
        print(f"| {r['server']} | {r['name']} | {r['done']:,} | {r['failed']:,} | "
              f"{r['rate_limited']:,} ({pct(r['rate_limited'], r['arrivals'])}){spread} | "
              f"{r['wall']:.1f} | {ratio} |")
    if note:
        print(f"\n{note}")
    if lite_rows:
        print(f"\nLiteLLM's proxy (real time): `llmguard run --api-base URL` and nothing else "
              f"(limits learned), or `--rpm {LITELLM_RPM}`; {args.litellm_lines:,} lines; a "
              f"mock_response deployment with rpm {LITELLM_RPM:,} per clock minute; the ideal "
              f"counts {LITELLM_RPM - 1:,} a minute (what it admits), each minute's counted at "
              "its start, served back to back at the proxy's own pace without limits (the "
              "mean of its pace just before and just after the run)\n")
        print("| client | started at | load avg | proxy's pace ms (before/after) | lines done | "
              "failed | 429s (% of requests) | wall s | wall / ideal |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in lite_rows:
            paces = "/".join(f"{p * 1000:.1f}" for p in r["paces"])
            print(f"| {r['name']} | :{r['phase']:04.1f} | {r['load']:.1f} | "
                  f"{r['gap'] * 1000:.1f} ({paces}) | "
                  f"{r['done']:,} | {r['failed']:,} | "
                  f"{r['rate_limited']:,} ({pct(r['rate_limited'], r['arrivals'])}) | "
                  f"{r['wall']:.1f} | {r['wall'] / r['ideal']:.2f}x |")
    if minute_rows:
        print(f"\nwith default settings: `llmguard run --api-base URL --rpm {MINUTE_RPM} --tpm "
              f"{MINUTE_TPM:,}`, {MINUTE_LINES} lines (3x the quota) started about "
              f"{MINUTE_PHASE:g} s into the server's minute, {MINUTE_LATENCY:g} s per request, "
              "real time, 60 s windows\n")
        print("| server | started at | lines done | failed | 429s (% of requests) | wall s | "
              "wall / ideal |")
        print("|---|---|---|---|---|---|---|")
        for r in minute_rows:
            print(f"| {r['server']} | :{r['phase']:04.1f} | {r['done']:,} | {r['failed']:,} | "
                  f"{r['rate_limited']:,} ({pct(r['rate_limited'], r['arrivals'])}) | "
                  f"{r['wall']:.1f} | {r['wall'] / r['ideal']:.2f}x |")
    if stops:
        print(f"\ninterrupt and kill, token-bucket server, {args.requests:,} lines: stopped once a "
              "third were answered, then `--resume`; counted at the server\n")
        print("| run | lines done | failed | requests received | lines answered (paid) | "
              "duplicates paid | in flight at the stop (paid, not on disk) |")
        print("|---|---|---|---|---|---|---|")
        for r in stops:
            print(f"| {r['name']} | {r['done']:,} | {r['failed']:,} | {r['arrivals']:,} | "
                  f"{r['served']:,} | {r['duplicates']:,} | "
                  f"{r['paid_at_stop'] - r['written_at_stop']:,} |")


if __name__ == "__main__":
    main()
