"""Anthropic's input/output buckets and a gateway's per clock minute (#30), each request and
answer 0-10 ms on the way (the server's ``send_latency``): answers, and the output
``remaining`` they carry, come back out of the order the server served them. The README stack
with only ``rpm``/``input_tpm``/``output_tpm`` given, 3x the binding quota at once
(``bench_composition.py --both-ways``'s input/output rows), in virtual time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmguard.testing import InputOutputBucketServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from late_start import run_split  # noqa: E402


async def shuffled(phase: float, seed: int, shape: str = "bucket") -> tuple[int, float, float,
                                                                             str]:
    """138 calls at once from ``phase`` s into the minute against the server giving unused
    output back (its ``seed`` drawing each way's 0-10 ms): its 429s, the wall time, its ideal
    and the rate limit's shape."""
    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64, shape=shape, seed=seed,
                                     send_latency=lambda rng: rng.uniform(0, 0.01))
    layer, wall, ideal = await run_split(server, phase, 138)
    return server.statistics().rate_limited, wall, ideal, layer.statistics().shape


@pytest.mark.parametrize("seed", range(6))
async def test_a_burst_answered_out_of_order_shows_anthropics_give_back(seed: int) -> None:
    """Anthropic's buckets (unused output given back), 138 calls of max_tokens=200 using 64
    against 3,000 output tokens a minute. The first 15 are answered together, shuffled: their
    readings rise by the unused output ended, twice (the burst's give-back shown), then one
    older than the last shown drops below it (seeds 1, 2, 4: 1,188 after 2,140). Read as a
    drop voiding what was shown, the give-back went unjudged: ``max_tokens`` kept charged,
    the rest at the refill's pace, 15 a minute (4.01x), the server's bucket full from :30 on
    so no span was judged after. Nothing of ours admitted since the first span shown, a
    reading below the one shown within ``spread`` of it may be older than it: it tells
    nothing, and the next answer's reading confirms the give-back."""
    refused, wall, best, shape = await shuffled(0, seed)
    assert refused == 0, shape
    assert "unused output given back (the server does)" in shape
    assert wall <= 1.10 * best, (wall, best, shape)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("phase", [20, 59])
async def test_a_gateways_minute_read_as_of_each_shuffled_answer_is_not_overrun(
        phase: float, seed: int) -> None:
    """A gateway counting Anthropic's quotas per clock minute (unused output given back), from
    :20: the first 15 answered at :22 within 10 ms, shuffled, each reading (a reset that is a
    moment: as of the answer) set the minute's cap afresh, every one of ours sent counted in
    it. But ours sent on the reading before were still on the way as this answer left the
    server: a reading 1,840 after 1,496 (an older answer after a newer one) let 4 more go on
    the room the 4 before had taken, 31 in all where the minute had room for 10 (88 429s,
    1.74x; 57-75 from :59, 2.42x). Ours sent within ``spread`` before the reading are not
    counted in a cap it sets (:meth:`.reading.Readings.unseen`)."""
    refused, wall, best, shape = await shuffled(phase, seed, shape="fixed")
    assert refused <= 1, shape
    assert wall <= 1.10 * best, (wall, best, shape)


@pytest.mark.parametrize("seed", range(1, 6))
async def test_a_burst_answered_out_of_order_after_a_minute_shows_the_give_back(
        seed: int) -> None:
    """As above from :58 (seed 0 passed before): the first 15 are answered at :60, past the
    clock minute, so the burst's judgement (:mod:`.giveback_burst`) starts anew at each
    reading (a gateway's count starting afresh could explain a rise), and only the spans of
    :class:`.giveback.GiveBack` judge. Their anchor was a reading older than those heard
    before it (1,052 at :60.010), and the span ended on another older one (1,188 at :60.014,
    952 unused output heard ended between, but 4 of those answers served after it): a rise of
    136, a vote "keeps it"; the bucket then filled at ``max_tokens`` kept charged (one call in
    4 s), near full (no span judged) before the next had 900 given back: 15 calls a minute
    (4.10x). Nothing of ours on the way, the server's readings only rise: ordered by what they
    show (:mod:`.giveback_order`), a lower one is older (the span starts from it) and the
    answers served in a span are those showing between its ends."""
    refused, wall, best, shape = await shuffled(58, seed)
    assert refused == 0, shape
    assert wall <= 1.10 * best, (wall, best, shape)
