"""A server that says nothing, far more calls at once than its quota admits a minute: the
shape stays unknown for minutes (paced within a fixed window from the clock minute and a
token bucket, ``_admission.ratelimit.silent``), longer than the two windows a learned-shape
track keeps. Each case was seen in ``benchmarks/bench_composition.py`` at 6x and 10x the
quota (``--demand``). Virtual time, the wall clock pinned to the loop's; the pure parts
(``carry.py``) tested directly."""


import pytest

from llmguard._admission.ratelimit.carry import Carry
from llmguard.testing import FixedWindowServer, TokenBucketServer
from late_start import run

STRICT = 1 / 0.9  #: OpenAI counts a request's characters, framing included: 1.11x ours


@pytest.mark.parametrize("calls", [282, 470])
async def test_a_silent_bucket_keeps_the_opening_bursts_deficit_past_two_windows(
        calls: int) -> None:
    """Started at :55, 6x and 10x the 47 calls a minute the bucket refills (charging our
    estimate). Before: 43 429s, 43 calls failed (the circuit breaker opened): the shape still
    unknown two windows in, the bucket's bound forgot the opening burst when it left the
    history, and 25 went at once at the next minute into a bucket holding 14. Now what leaves
    the history is carried (``carry.Carry``): no 429. Since the probes whose answers would
    come after the minute go two round trips apart (``served.served_at``), the factor is
    bounded to 1.0 in the opening minute, and the bucket is learned by the one probe beyond
    it refused (as ``test_silent_both``'s bucket started late): one 429, 1.00x."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False)
    layer, wall, ideal = await run(server, 55.0, calls, jitter=None)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.02 * ideal, (wall, ideal)


@pytest.mark.parametrize("headers", [True, False])
@pytest.mark.parametrize("calls", [252, 420])
async def test_a_strict_silent_fixed_window_refuses_one_request(calls: int,
                                                                headers: bool) -> None:
    """A fixed clock-minute window charging 1.11x our estimate, started at :55, 6x and 10x
    its 42 calls a minute; its 429s say when to retry, or nothing at all (``headers=False``:
    a bare 429, the pause our default). Before: 4-5 and 25 429s: learned a fixed window at a
    factor its probes bounded over a whole window, ours of the minute before counted with
    this one's (1.07x), it admitted one more than the server a minute; each refused one,
    paused a second only, went again into the full minute. Now the factor comes down only to
    what the probes bound in their own minute (``Charge.clocked``), and a 429 of a learned
    fixed window holds the rest to its next boundary: the one 429 that learns the charge."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                               rate_limit_headers=False, retry_after=headers)
    layer, wall, ideal = await run(server, 55.0, calls, jitter=0.01)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.02 * ideal, (wall, ideal)


def test_a_carry_holds_what_a_bucket_full_at_the_start_holds_at_each_factor() -> None:
    """Two bursts folded a minute apart into a bucket of 1,000 a minute: at our estimates it
    filled up in between; at 1.2x it did not, and the deficit stays. A burst that took more
    than the bucket refilled since the one before adds no bound: a few kept, however many
    folded."""
    carry, rate = Carry(), 1000 / 60
    for _ in range(9):
        carry.fold(0.0, 100, rate)
    for _ in range(9):
        carry.fold(60.0, 100, rate)
    assert carry.held(60.0, 1000, rate) == pytest.approx(100.0)
    # at 1.2x: 1,000 - 1,080, refilled 1,000 (not full), less 1,080 again
    assert carry.held(60.0, 1000, rate, 1.2) == pytest.approx(-160.0)
    assert carry.held(90.0, 1000, rate, 1.2) == pytest.approx(-160.0 + 500.0)
    assert len(carry.lines) == 2
    # the highest factor at which a bucket holds 50 more of ours at :60: 1,000 / 950
    assert carry.most(60.0, 1000, rate, 50, 0) == pytest.approx(1000 / 950)
    assert carry.most(60.0, 1000, rate, 200, 0) < 1.0
    for t in range(61, 200):  # paced at the refill: each bound is no tighter than the first
        carry.fold(float(t), 1000 / 60, rate)
    assert len(carry.lines) == 2


@pytest.mark.parametrize("calls", [252, 420])
@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_a_strict_silent_bucket_from_the_minute_is_paced_near_its_rate(
        seed: int, calls: int) -> None:
    """A bucket charging 1.11x our estimate, started on the minute with 6x and 10x its 42
    calls a minute. Before: 4 429s (seeds 0 and 1): the one that learns the charge keeps the
    factor at 1.1184x, above the least that 429 showed (1.0036x); one beyond the bucket at it
    was served (a bucket charging 1.11x holds it) and taken for a fixed window; the burst at
    the switch to the fixed count was refused 3 times before a 429 a fixed clock minute would
    have admitted dropped it. Now a probe served beyond the bucket only at a factor a 429
    kept above what it showed proves no fixed window (:func:`.apart.cheaper`): paced within
    both, the one 429 that learns the charge."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                               rate_limit_headers=False)
    layer, wall, ideal = await run(server, 0.0, calls, seed, jitter=0.01)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.03 * ideal, (wall, ideal)
