"""`llmguard run` throughput against a bare ``asyncio.gather`` over one aiohttp session, on one
fast local upstream, in one run.

    python benchmarks/bench_run.py [--lines 5000] [--repeats 5] [--concurrency 32]

The upstream is ``bench_gateway.py``'s (an aiohttp server answering a fixed OpenAI-shaped
completion), on its own CPU (``taskset``); each client runs in a fresh process pinned to another
CPU and reads the same JSONL file of chat requests, writing one JSON line per answer:

* **bare gather**: ``asyncio.gather`` over every line, a semaphore of ``--concurrency``, one
  ``aiohttp.ClientSession`` posting each request, ``json.dumps`` of each answer to the output;
  what a careful user writes by hand with no limits, retries, checkpoint or report;
* **llmguard run**: the CLI with ``--api-base`` at the upstream and the same concurrency (its
  default layers, checkpointed output, the final report).

Figures are lines per second of the whole process (start to exit: imports included, as a user
waits for them), medians over interleaved repeats (alternating order), and the median of the
per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import cpus, spawn, stop, wait_up  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_input(path: Path, lines: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            f.write(json.dumps({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [
                {"role": "user", "content": f"question {i}: what is the capital of France?"}]})
                + "\n")


BARE = """
import asyncio, json, sys
import aiohttp

async def main(src, dst, url, concurrency):
    semaphore = asyncio.Semaphore(concurrency)
    requests = [json.loads(line) for line in open(src)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(request):
            async with semaphore:
                async with session.post(url, json=request) as answer:
                    return await answer.json()
        answers = await asyncio.gather(*(one(r) for r in requests))
    with open(dst, "w") as out:
        for answer in answers:
            out.write(json.dumps(answer) + "\\n")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def run(cmd: list[str], cpu: str) -> float:
    start = time.perf_counter()
    subprocess.run(["taskset", "-c", cpu, *cmd], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    client_cpu, upstream_cpus = cpus()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "in.jsonl")
        write_input(src, args.lines)
        port = free_port()
        upstream = spawn([sys.executable, str(ROOT / "benchmarks" / "bench_gateway.py"),
                          "--upstream", str(port)], upstream_cpus)
        base = f"http://127.0.0.1:{port}/v1"
        clients = {
            "bare gather + one aiohttp session": lambda out: [
                sys.executable, "-c", BARE, str(src), out, f"{base}/chat/completions",
                str(args.concurrency)],
            "llmguard run": lambda out: [
                sys.executable, "-m", "llmguard", "run", str(src), "-o", out, "--overwrite",
                "--api-base", base, "--api-key", "none", "--model", "gpt-4o-mini",
                "--concurrency", str(args.concurrency)],
        }
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz", upstream)
            names = list(clients)
            for name in names:  # one untimed run each: disk and import caches warm alike
                run(clients[name](str(Path(tmp, "warm.jsonl"))), client_cpu)
            for repeat in range(args.repeats):
                print(f"  ... repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
                for name in names if repeat % 2 == 0 else names[::-1]:
                    out = Path(tmp, "out.jsonl")
                    seconds[name].append(run(clients[name](str(out)), client_cpu))
                    answered = sum(1 for line in out.open() if line.strip())
                    assert answered == args.lines, (name, answered)
        finally:
            stop(upstream)
    bare = seconds[names[0]]
    print(f"\n{args.lines} lines, concurrency {args.concurrency}, one fast local upstream; "
          f"whole-process lines/s, medians of {args.repeats} interleaved runs\n")
    print(f"| {'client':36} | lines/s | x bare gather |")
    print(f"|{'-' * 38}|--------:|--------------:|")
    for name in names:
        ratio = statistics.median(b / s for s, b in zip(seconds[name], bare))
        print(f"| {name:36} | {args.lines / statistics.median(seconds[name]):7,.0f} "
              f"| {ratio:12.2f}x |")
    ratio = statistics.median(b / s for s, b in zip(seconds["llmguard run"], bare))
    print(f"\nTarget (#36): llmguard run >= 0.8x a bare gather: {ratio:.2f}x "
          f"{'pass' if ratio >= 0.8 else 'MISS'}")


if __name__ == "__main__":
    main()
