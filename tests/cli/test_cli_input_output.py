"""`llmguard run` against a server limiting input and output tokens apart, as Anthropic does
(``InputOutputBucketServer`` behind ``LoopbackServer``, with Anthropic's rate-limit headers):
``--input-tpm``/``--output-tpm`` pace to it, and without them its ``anthropic-ratelimit-*-limit``
headers become the quotas. Real subprocesses and sockets; time compressed 20x as in
``test_cli_paced``. No wall-clock bound."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from llmguard.testing import InputOutputBucketServer, LoopbackServer

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
SCALE = 20  #: the server's minute is 3 s
HANG_GUARD = 300  #: a safety net against a hung child, never an assertion about speed


async def run(tmp_path: Path, http: LoopbackServer, lines: int, *options: str) -> tuple[
        int, str, list[dict]]:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"}],
                                       "max_tokens": 64}) + "\n" for i in range(lines)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmguard", "run", str(src), "-o", "out.jsonl", "--no-progress",
        "--model", "claude", "--api-base", http.base_url, "--concurrency", "64", *options,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    out = tmp_path / "out.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc.returncode or 0, err.decode(), records


@pytest.mark.parametrize("gives_back", [True, False])
async def test_input_and_output_quotas_pace_a_run_against_anthropics_limiter(
        tmp_path: Path, gives_back: bool) -> None:
    """300 lines of max_tokens=64 (16 used) against input and output buckets of 1,000 and 640
    tokens per (compressed) minute: ``--input-tpm``/``--output-tpm`` (held over a twentieth of
    the minute with ``--burst``) pace the run, every line is done once, 429s at most 1%; also
    against a server that keeps max_tokens charged (``refunds_output=False``: learned from its
    output remaining headers; 100 lines there: its output bucket passes 64 a line, so 300 took
    90 s of the suite, 100 still cross ten of its minutes)."""
    server = InputOutputBucketServer(input_tpm=1_000, output_tpm=640, window=60 / SCALE,
                                     latency=0.05, output_tokens=16, refunds_output=gives_back)
    lines = 300 if gives_back else 100
    async with LoopbackServer(server) as http:
        code, err, records = await run(
            tmp_path, http, lines, "--input-tpm", str(1_000 * SCALE),
            "--output-tpm", str(640 * SCALE), "--burst", str(1 / SCALE),
            "--margin", str(0.5 / SCALE), "--refill", "continuous")
    assert code == 0, err
    assert "input_tpm=20000 output_tpm=12800" in err
    assert len(records) == lines and all(r["ok"] for r in records)
    stats = server.statistics()
    assert stats.served == lines and stats.cancelled_after_arrival == 0
    assert stats.rate_limited <= 0.01 * stats.arrivals, stats


async def test_anthropic_limit_headers_become_the_quotas(tmp_path: Path) -> None:
    """Without quotas, the first answer's anthropic-ratelimit-{requests,input-tokens,
    output-tokens}-limit become --rpm, --input-tpm and --output-tpm, printed; every line done."""
    server = InputOutputBucketServer(rpm=5_000, input_tpm=400_000, output_tpm=80_000,
                                     latency=0.01, output_tokens=16)
    async with LoopbackServer(server) as http:
        code, err, records = await run(tmp_path, http, 20)
    assert code == 0, err
    assert "rpm=5000 input_tpm=400000 output_tpm=80000 (learned" in err
    assert len(records) == 20 and all(r["ok"] for r in records)
    assert server.statistics().rate_limited == 0


def test_input_and_output_quotas_are_checked_like_the_others(tmp_path: Path) -> None:
    """A bad --output-tpm is refused with a message naming it, before anything is read."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "llmguard", "run", "missing.jsonl", "-o",
                           "o.jsonl", "--output-tpm", "-5"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=HANG_GUARD)
    assert proc.returncode != 0 and "--output-tpm" in proc.stderr
