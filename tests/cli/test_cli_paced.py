"""A new user's job: `llmguard run` paces a 1,000-line file to a server's quota with one
command, against the fixed-window and the token-bucket testing servers over real HTTP.

The servers run on this test's event loop behind :class:`llmguard.testing.LoopbackServer`; the
run is a real ``llmguard run`` subprocess with ``--api-base`` and ``--rpm`` set to the server's
quota. Time is compressed 20x: the server enforces its per-minute quota over 3 s windows, and
the run holds ``--rpm`` over a twentieth of its minute (``--burst 0.05``), with the default
``--margin`` compressed alike. Counted at the server: every line answered exactly once, 429s
at most 1% of the requests it received. No wall-clock bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from llmguard.testing import FixedWindowServer, LoopbackServer, TokenBucketServer

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
LINES = 1000
SCALE = 20  #: time compression: the server's minute is 3 s
QUOTA = 250  #: requests per (compressed) minute at the server
HANG_GUARD = 300  #: a safety net against a hung child, never an assertion about speed


def counting(server_class: type) -> type:
    """``server_class`` recording the prompt of every request it answered (paid for)."""

    class Counting(server_class):  # type: ignore[misc, valid-type]
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.answered: Counter[str] = Counter()

        async def acompletion(self, **kwargs: Any) -> dict[str, Any]:
            result = await super().acompletion(**kwargs)
            self.answered[kwargs["messages"][-1]["content"]] += 1
            return result

    return Counting


@pytest.mark.parametrize(("server_class", "refill"), [
    (FixedWindowServer, "window"), (TokenBucketServer, "window"),
    (TokenBucketServer, "continuous")])
async def test_a_1000_line_run_paced_to_the_quota_does_every_line_once(
        tmp_path: Path, server_class: type, refill: str) -> None:
    """Every line done, 0 failed, 429s <= 1% of the requests received, no line answered twice
    and no request sent for a line already answered; with ``--refill continuous`` against the
    token bucket too (paced at its refill rate after the first burst)."""
    server = counting(server_class)(rpm=QUOTA, window=60 / SCALE, latency=0.05)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}],
                                       "max_tokens": 16}) + "\n" for i in range(LINES)))
    async with LoopbackServer(server) as http:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmguard", "run", str(src), "-o", "out.jsonl",
            "--no-progress", "--model", "m", "--api-base", http.base_url,
            "--rpm", str(QUOTA * SCALE), "--burst", str(1 / SCALE),
            "--margin", str(0.5 / SCALE), "--concurrency", "64", "--refill", refill, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    stats = server.statistics()
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == LINES and all(r["ok"] for r in records)
    assert [r["line"] for r in records] == list(range(1, LINES + 1))
    assert sorted(server.answered) == sorted(f"q{i}" for i in range(LINES))
    assert set(server.answered.values()) == {1}  # no line paid twice
    assert stats.arrivals == LINES + stats.rate_limited  # only refused requests were re-sent
    assert stats.cancelled_after_arrival == 0
    assert stats.rate_limited <= 0.01 * stats.arrivals, (stats, out.decode())
    assert stats.peak_window_requests <= QUOTA or server_class is TokenBucketServer
