"""Input and output token quotas (``RateLimit(input_tpm=, output_tpm=)``) against a gateway
that counts them per clock minute and says nothing of its limits (a 429's ``retry-after``
only), started late in a minute: paced as Anthropic's buckets until a 429 asks for longer than
a bucket refills, then learned a fixed window. What that 429 shows of the limit is read as a
window counts ours, not as the bucket it refuted. All in virtual time."""

import sys
from pathlib import Path

import pytest

from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import InputOutputBucketServer

sys.path.insert(0, str(Path(__file__).parent.parent))
from late_start import run_split  # noqa: E402

MARGIN = 0.05


def output_window() -> Window:
    """An ``output_tpm=3_000`` quota whose answers came without any header (``unsaid``)."""
    w = Window((Quota(3_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN, part="output"),))
    w.shape.quiet = True
    return w


def test_a_429_longer_than_a_bucket_refills_reads_no_limit_from_the_bucket_it_refuted() -> None:
    """15 calls of 200 output tokens at :55 (64 used each, given back), then as the assumed
    bucket lets them go until :20, 43 in all: a 429 asking to wait until the minute is no
    bucket's. Read from the bucket (refilled meanwhile: 2,796 of 3,000 taken) it taught "the
    server admits 2,796" (41 calls a minute where the gateway admits 44); read as a window
    counts ours, more than the quota went in the last minute: nothing lower is learned, and
    the clock minute is supposed instead."""
    w = output_window()
    track = w.tracks[0]
    for entry in [w.add(55.0, 200) for _ in range(15)]:
        w.adjust(57.0, entry, 64)
    sent, now = [], 57.0
    while len(sent) < 43:
        now += 0.5
        for entry in sent:
            if entry.tokens == 200 and entry.time <= now - 2.0:
                w.adjust(now, entry, 64)
        entry = w.take(now, 200)
        if entry is not None:
            sent.append(entry)
    assert w.shape.pacing == "bucket" and track.limit == 3_000
    w.refused(now, sent[-1], 120.0 - now, wall=now)  # the last one, answered at once
    assert track.limit == 3_000, w.shape
    assert w.shape.assumed == "" and w.shape.candidate == pytest.approx(120.0)


def test_the_probe_that_shows_the_clock_minute_counts_in_it_as_settled() -> None:
    """The probe just after the minute, served, makes the fixed count from the log, where the
    probe still stood as admitted (200 output tokens): counted so, the minute lost the 136 its
    answer gave back (42 calls in it instead of 43). It counts as settled: 64."""
    w = output_window()
    track = w.tracks[0]
    first = [w.add(40.0, 200) for _ in range(15)]
    for entry in first:
        w.adjust(42.0, entry, 64)
    w.refused(42.5, w.add(42.5, 200), 17.5, wall=42.5)  # no bucket: a minute supposed at :00
    assert w.shape.candidate == pytest.approx(60.0)
    now = 60.0
    while (probe := w.take(now, 200)) is None or w.shape.probe is not probe:
        now += 0.01
    w.adjust(now + 2.0, probe, 64)
    assert w.shape.kind == "fixed", w.shape
    minute = [e.tokens for e in track.log.entries if e.time >= 60.0]
    assert probe.tokens == 64 and len(minute) > 1
    assert track.fixed.counts[track.fixed.index(now)] == sum(minute)


def test_a_429_to_the_clock_minute_with_the_minute_full_of_ours_is_a_fixed_window() -> None:
    """A gateway keeping ``max_tokens`` charged (15 calls of 200 a minute) paced as the bucket
    assumed, 4 s apart: the 16th of the minute, at :55.57, is refused until :00. A bucket of
    the quota, as we count ours, had room; the clock minute was full of ours: a fixed window,
    learned so, its limit as given (read from the bucket: 2,800, 14 calls a minute)."""
    w = output_window()
    track = w.tracks[0]
    sent = [w.add(60.0 + 4.0 * i, 200) for i in range(15)]
    for entry in sent:
        w.adjust(entry.time + 2.0, entry, 200)
    assert w.wait(115.57, 200) == 0.0
    refused = w.add(115.57, 200)
    w.refused(115.57, refused, 4.43, wall=115.57)
    assert w.shape.kind == "fixed" and w.shape.epoch == pytest.approx(120.0), w.shape
    assert "to the clock minute" in w.shape.why and track.limit == 3_000
    assert w.wait(118.0, 200) > 2.0 and w.wait(120.6, 200) == 0.0

    bucket = output_window()  # a pause that ends off the minute: a bucket's, maybe
    for i in range(15):
        bucket.add(60.0 + 4.0 * i, 200)
    bucket.refused(115.57, bucket.add(115.57, 200), 2.5, wall=115.57)
    assert bucket.shape.kind == "unknown" and bucket.shape.pacing == "bucket"


@pytest.mark.parametrize("phase", [0, 40, 45, 50, 55, 58, 59])
async def test_a_headerless_gateway_keeping_max_tokens_charged(phase: float) -> None:
    """The same gateway keeping ``max_tokens`` charged (15 calls a minute): one 429 tests
    whether it gives unused output back, and asking to wait until the minute (longer than a
    bucket refills the request) it shows the clock minute too: no second 429 teaches it (from
    :00 to :45 one did, a minute later); within 1.04x the ideal (from :45 it ran 1.09x, paced
    to the 2,800 read from the refuted bucket). From :58 or :59 the opening burst is answered
    after :00, where the test is served by the window started afresh: a give-back only until
    the window ``max_tokens`` fills refuses one request (37 429s when taken for certain)."""
    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64, shape="fixed", refunds_output=False,
                                     rate_limit_headers=False)
    layer, wall, ideal = await run_split(server, phase, 138)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.04 * ideal, (wall, ideal, layer.statistics().shape)


@pytest.mark.parametrize("phase", [0, 40, 45, 50, 55])
async def test_a_headerless_gateway_counting_input_and_output_per_clock_minute(
        phase: float) -> None:
    """``rpm``/``input_tpm``/``output_tpm`` only, 3x the quota against a gateway in front of
    Anthropic counting each per clock minute and sending no rate-limit header (its 429 says
    when to retry: the next minute): learned a fixed window, the output part says so and
    why, within 1.06x the ideal from any phase (from :55 it ran 1.13x: the limit read from the
    refuted bucket); one 429."""
    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64, shape="fixed", rate_limit_headers=False)
    layer, wall, ideal = await run_split(server, phase, 138)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.06 * ideal, (wall, ideal, layer.statistics().shape)
    output = layer.statistics().shape.split("output: ")[1]
    assert output.startswith("fixed ("), output


def test_a_429_the_quota_itself_explains_teaches_no_lower_limit() -> None:
    """16 calls answered (64 output tokens each) and 9 in flight (200 each) within 6 s of
    :00: 2,824 of 3,000 by a window's count, the assumed bucket's refill letting one more
    go, refused until the minute. Ours and the refused one (3,024) are over the quota as
    given: the 429 is the fixed window's, not a lower limit (read as "the server admits
    2,824" it paced 42 calls a minute where the gateway admits 44: 1.10x the ideal at 10x
    the quota)."""
    w = output_window()
    track = w.tracks[0]
    for entry in [w.add(0.0, 200) for _ in range(16)]:
        w.adjust(2.0, entry, 64)
    for i in range(9):
        w.add(2.0 + 0.3 * i, 200)
    assert track.log.used == 2_824 and w.wait(5.29, 200) == 0.0  # (the bucket: room)
    w.refused(5.29, w.add(5.29, 200), 54.71, wall=5.29)
    assert track.limit == 3_000 and "admits" not in w.shape.limits, w.shape.limits


@pytest.mark.parametrize("phase", [0, 40, 55])
async def test_ten_times_the_quota_on_a_headerless_gateway_counting_per_clock_minute(
        phase: float) -> None:
    """10x the quota (460 calls) at once against the gateway counting input and output per
    clock minute, saying nothing of its limits: one 429, within 1.04x the ideal from any
    phase (it ran 1.10-1.11x: the 429 that showed the fixed window taught "the server admits
    2,824" of 3,000, and from :55 the give-back test waited for room the server had: the
    refund's bound gave back 36 of an answer's 136 unused, where the server's cap can have
    taken none of it)."""
    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64, shape="fixed", rate_limit_headers=False)
    layer, wall, ideal = await run_split(server, phase, 460)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.04 * ideal, (wall, ideal, layer.statistics().shape)
