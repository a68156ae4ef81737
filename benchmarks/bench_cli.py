"""`llmguard run` against the OpenAI cookbook's api_request_parallel_processor approach.

One 10,000-request JSONL file, one loopback OpenAI-compatible HTTP server (127.0.0.1 only) that
enforces RPM and TPM over a sliding window the way providers do (``llmguard.testing.
SimulatedProvider`` behind aiohttp: 429 with ``retry-after`` when a request would exceed either).
Three clients, each given the server's quota as its rpm/tpm:

* ``llmguard run`` with ``--api-base`` pointing at the server (an OpenAI-compatible endpoint);
* the cookbook approach at 100% of the quota: capacity tracked by estimate (requests and
  tiktoken-counted tokens refilled continuously, starting full), no backoff, and after any 429
  every request waits a fixed pause (15 s in the cookbook) before the next is sent;
* the same at the cookbook's recommended 50% of the quota (its own advice to avoid 429s).

Time is compressed 10x so the whole comparison takes about two minutes: the server enforces the
quota over a sliding 6 s window (a tenth of the per-minute quota per window) instead of 60 s, and
the cookbook's minute and its 15 s pause are compressed alike (6 s, 1.5 s). llmguard gets the
same quota as per-minute rates with ``--burst 0.1`` (hold a tenth of it per 6 s: the window the
provider enforces, as OpenAI enforces per-minute quotas over shorter periods) and its default
0.5 s ``--margin`` compressed alike (0.05 s). The server counts a request's tokens
as prompt (4 characters a token) plus ``max_tokens``; the cookbook estimates with tiktoken, as it
does against OpenAI, so like any client its estimate differs from the provider's count. Wall time
is measured on the server, from the first request to the last answer; quota utilisation is what
was served divided by what the quota allowed in that time (a full window at the start, then the
rate).

    python benchmarks/bench_cli.py [--requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALE = 10  #: time compression: a 60 s quota window becomes 6 s
WINDOW = 60 / SCALE
RPM = 24_000  #: 2,400 requests per 6 s window: 400 requests/s
TPM = 3_000_000  #: 300,000 tokens per 6 s window: 50,000 tokens/s
LATENCY = 0.05  #: server latency per request (s), plus 0.5 ms per output token
PAUSE = 15 / SCALE  #: the cookbook's fixed pause after a 429, scaled like the window


# --------------------------------------------------------------------------- the server


def serve(port: int) -> None:
    """The simulated provider over HTTP.

    ``POST /reset?share=F`` starts a fresh quota, with another consumer (not counted in the
    stats) using the fraction F of it at a steady rate; ``GET /stats`` reports the client's
    requests only.
    """
    from aiohttp import web

    from llmguard import estimate_tokens
    from llmguard.testing import ProviderError, SimulatedProvider

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

    def fresh(share: float) -> None:
        if state.get("background"):
            state["background"].cancel()
        sim = SimulatedProvider(capacity=4096, latency=LATENCY, seconds_per_output_token=0.0005,
                                rpm=RPM // SCALE, tpm=TPM // SCALE, window=WINDOW,
                                output_tokens=lambda rng, kw: rng.randint(10, 120))
        background = asyncio.ensure_future(other_consumer(sim, share)) if share else None
        state.update(sim=sim, background=background, first=None, last=None, charged=0,
                     served=0, rate_limited=0)

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        now = asyncio.get_running_loop().time()
        if state["first"] is None:
            state["first"] = now
        try:
            result = await state["sim"].acompletion(**body)
        except ProviderError as exc:
            state["rate_limited"] += exc.status_code == 429
            kind = "rate_limit_error" if exc.status_code == 429 else "server_error"
            return web.json_response({"error": {"message": str(exc), "type": kind, "code": None}},
                                     status=exc.status_code, headers=exc.headers)
        state["last"] = asyncio.get_running_loop().time()
        state["charged"] += estimate_tokens(messages=body["messages"],
                                            max_tokens=body.get("max_tokens", 0))
        state["served"] += 1
        result.update(id=f"chatcmpl-{state['served']}", created=int(time.time()))
        return web.json_response(result)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({k: state[k] for k in ("served", "rate_limited", "charged")}
                                 | {"wall": (state["last"] or 0) - (state["first"] or 0)})

    async def reset(request: web.Request) -> web.Response:
        fresh(float(request.query.get("share", 0)))
        return web.json_response({})

    async def start(app: web.Application) -> None:
        fresh(0.0)

    app = web.Application()
    app.on_startup.append(start)
    app.add_routes([web.post("/v1/chat/completions", completions), web.get("/stats", stats),
                    web.post("/reset", reset)])
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
    rng = random.Random(42)
    words = "the quick brown fox jumps over a lazy dog while llms answer politely".split()
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 120)))
            f.write(json.dumps({"model": "sim", "max_tokens": rng.randint(20, 120),
                                "messages": [{"role": "user", "content": text}]}) + "\n")


def http(port: int, method: str, path: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if
                                 method == "POST" else None)
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def failed_lines(path: Path) -> int:
    """Lines that ended as an error: llmguard records, or the cookbook's [request, error]."""
    failed = 0
    with path.open() as f:
        for line in f:
            record = json.loads(line)
            failed += not record["ok"] if isinstance(record, dict) else "error" in record[1]
    return failed


def run_client(name: str, cmd: list[str], out: Path, port: int, share: float) -> dict:
    http(port, "POST", f"/reset?share={share}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-bench"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stats = http(port, "GET", "/stats")
    return {**stats, "name": name, "failed": failed_lines(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--share", type=float, default=0.0,
                        help="fraction of the quota another consumer uses meanwhile (0 to 0.9)")
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

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(200):
            try:
                http(port, "GET", "/stats")
                break
            except OSError:
                time.sleep(0.05)
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
        clients = [("llmguard run", lg, tmp / "lg.jsonl"),
                   ("cookbook, 100% quota", [*me, str(RPM), str(TPM)], tmp / "cookbook.jsonl"),
                   ("cookbook, 50% quota", [*me, str(RPM / 2), str(TPM / 2)],
                    tmp / "cookbook.jsonl")]
        rows = [run_client(name, cmd, out, port, args.share) for name, cmd, out in clients]
    finally:
        server.terminate()
        server.wait()
    left = 1 - args.share
    print(f"\n{args.requests:,} requests; quota {RPM:,} rpm / {TPM:,} tpm over a sliding "
          f"{WINDOW:g} s window (time compressed {SCALE}x; cookbook pause {PAUSE:g} s)"
          + (f"; another consumer uses {args.share:.0%} of it" if args.share else ""))
    print("utilisation: served / what the quota (less the other consumer's share) allowed in the "
          "wall time: one full window at the start, then the rate\n")
    head = (f"{'client':<22} {'wall s':>7} {'vs llmguard':>11} {'429s':>6} {'failed':>6} "
            f"{'req util':>8} {'tok util':>8}")
    print(head)
    print("-" * len(head))
    base = rows[0]["wall"]
    for r in rows:
        windows = 1 + r["wall"] / WINDOW  # a full window at the start, then the rate
        req_util = r["served"] / (RPM / SCALE * left * windows) if windows else 0
        tok_util = r["charged"] / (TPM / SCALE * left * windows) if windows else 0
        print(f"{r['name']:<22} {r['wall']:>7.1f} {r['wall'] / base:>10.2f}x "
              f"{r['rate_limited']:>6,} {r['failed']:>6,} {req_util:>8.0%} {tok_util:>8.0%}")


if __name__ == "__main__":
    main()
