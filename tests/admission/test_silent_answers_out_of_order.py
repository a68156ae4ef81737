"""A fixed clock-minute window that sends no rate-limit headers (its 429s say when to retry),
started at :58 with each request and answer 0-10 ms on the way (the server's ``send_latency``:
``bench_composition.py --both-ways``), through the README stack with only ``rpm``/``tpm``
given, 3x the quota at once, in virtual time (#30)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from llmguard.testing import FixedWindowServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from late_start import ask, run  # noqa: E402


async def silent_fixed_window(phase: float, seed: int) -> tuple[int, float, float, str]:
    """180 calls at once from ``phase`` s into the minute, the server's ``seed`` drawing
    each way's 0-10 ms: its 429s, the wall time, the soonest 32 calls in flight allow (the
    README stack's ConcurrencyLimit) and the shape."""
    server = FixedWindowServer(rpm=60, tpm=40_000, latency=2.0, rate_limit_headers=False,
                               seed=seed, send_latency=lambda rng: rng.uniform(0, 0.01))
    layer, wall, _ = await run(server, phase, 180, jitter=None, tpm=40_000)
    start = asyncio.get_running_loop().time() - wall
    best = server.ideal_time(180, tokens=server.charge(**ask(100)), start=start, in_flight=32)
    return server.statistics().rate_limited, wall, best, layer.statistics().shape


@pytest.mark.parametrize("phase", [58, 59])
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_silent_fixed_window_from_58_with_answers_out_of_order(seed: int,
                                                                        phase: int) -> None:
    """From :58 the 32 sent then are answered at :60, the next 28 at :62 (sent at :60.05),
    all 60 counted in the minute from :60; the probe beyond the minute goes at :122.06 and
    a 429 comes back (retry-after 57.9 s), "a request beyond a fixed window, within a token
    bucket, refused after the clock minute: a fixed window". With seeds 0-2 that 429 is to
    one of ours sent just before the probe (overtaken: the probe arrived first), which,
    judged at its own place, the probe left out, was within the minute: read as "a probe
    was refused (429) after the clock minute: not a fixed window", the rest paced as a
    sliding window, seeds 1 and 2 took a fourth minute for their last call (184 s where 32
    in flight allow 124: 1.49x; from :59 alike). Judged as the probe's, the overtaken one
    counted before it (:func:`.silent.refusal`, the limit read at the probe's place), a
    fixed window: 126 s, 1.02x."""
    refused, wall, best, shape = await silent_fixed_window(phase, seed)
    assert refused <= 1, shape
    assert wall <= 1.05 * best, (wall, best, shape)
