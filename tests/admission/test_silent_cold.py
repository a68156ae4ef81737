"""A silent token bucket behind a cold network (the opening burst 0.8 s on the way, later ones
10 ms): each bound of what a bucket holds or charges takes ours to arrive as late as their
own way there allows (``holds.py``), not the margin, a window's 99th percentile (0.8 s for a
minute after the burst, 0.05 s after it). Seen in ``benchmarks/bench_composition.py`` (the
cold table). Virtual time, the wall clock pinned to the loop's; the pure parts directly."""

import asyncio
import math

import pytest

from llmguard._admission.ratelimit import apart, bounds, holds, refuted
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import TokenBucketServer
from late_start import run

RATE = 10_000 / 60
COLD, WARM = 0.8, 0.01  #: seconds on the way: the opening burst's, then every later one's


def cold_window(margin: float) -> Window:
    """One learned 10,000 TPM quota (and 60 RPM) whose answers came without any header, with
    ``margin`` seconds in force."""
    w = Window((Quota(60, 60.0 + margin, False, learn=True, margin=margin),
                Quota(10_000, 60.0 + margin, True, learn=True, margin=margin)))
    w.shape.quiet = True
    w.charge.silent = True
    return w


def test_a_probe_served_bounds_what_a_bucket_charges_as_of_its_own_arrival() -> None:
    """46 of ours of 212 tokens at :00, a probe at :20 answered 20 ms after it went (its own
    way there at most), the margin 0.82 s (the burst's samples). A bucket refilled until the
    probe arrived: 20.02 s of it, not 20.82 s (137 tokens more, 1.2% of the bound: a cold
    silent bucket's bound stayed at 1.13-1.15x where it charges our estimate)."""
    w = cold_window(0.82)
    for _ in range(46):
        w.add(0.0, 212)
    probe = w.add(20.0, 212)
    before = bounds.bucketed(w, probe, rounded=False)
    assert math.isclose(before, (10_000 + RATE * 20.82) / (47 * 212))
    probe.way = 0.02
    assert math.isclose(bounds.bucketed(w, probe, rounded=False),
                        (10_000 + RATE * 20.02) / (47 * 212))


def test_what_a_bucket_surely_holds_takes_each_one_s_own_way() -> None:
    """A burst of 40 at :00 that took 0.8 s to arrive, with a margin of 0.05 s in force (its
    samples gone): a bucket surely holds only what refilled from 0.8 s on (taken from 0.05 s,
    a cold silent bucket at :45 held 125 tokens less than we counted: 15 429s); one answered
    in 10 ms after it bounds from its own arrival, one in flight from the margin's."""
    w = cold_window(0.05)
    track = w.tracks[1]
    burst = [w.add(0.0, 212) for _ in range(40)]
    for entry in burst:
        entry.way = 0.8
    assert math.isclose(holds.surely(track, 10.0),
                        10_000 + RATE * (10.0 - 0.8) - 40 * burst[0].tokens)
    late = w.add(9.0, 212)
    late.way = 0.01
    used = 40 * burst[0].tokens + late.tokens
    assert math.isclose(holds.surely(track, 10.0),
                        min(10_000 + RATE * (10.0 - 0.8) - used, 10_000 - late.tokens))
    assert holds.most(track, 10.0) >= holds.surely(track, 10.0) + RATE * 0.8


def test_a_bucket_learned_from_a_dry_refusal_holds_what_a_bucket_does() -> None:
    """Paced within a fixed window and a bucket, the bucket's own level lagged far below what
    a bucket holds (ours counted at the opening factor, nothing refilled it as a bucket):
    learned from the probe a dry bucket refused, it held -3,400 and waited 22 s (a cold silent
    bucket at :50, 1.18x the ideal). It holds what a bucket holds, nothing when the probe
    arrived, and what refilled since."""
    w = cold_window(0.05)
    track = w.tracks[1]
    for _ in range(40):
        w.add(0.0, 212)
    ticket = w.add(55.0, 212)
    w.shape.learn("bucket", "a probe was refused where no sliding window would")
    track.bucket.level = -3_400.0
    bounds.ceiled(w, 56.0, ticket)
    assert math.isclose(track.bucket.available(56.0), RATE * 1.0, abs_tol=1.0)


def test_the_most_a_bucket_charges_as_paced_takes_ours_as_late_as_their_way_allows() -> None:
    """46 of ours at :00 that took 0.8 s to arrive, a probe at :20 answered 20 ms after it
    went. What refutes a bucket (``Charge.ceiling``) is the most it charges at any timing: the
    burst arrived as admitted, 20.02 s of refill. What it is paced at (``Charge.paced``, the
    tokens track's ``ceiling``) takes the burst at 0.8 s, as what it surely holds does: 19.22
    s. Taken from the ceiling, a probe beyond what the bucket surely held was within what it
    might charge, bounded nothing, and the factor stayed at our pace (1.10x at :00)."""
    w = cold_window(0.05)
    burst = [w.add(0.0, 212) for _ in range(46)]
    for entry in burst:
        entry.way = COLD
    probe = w.add(20.0, 212)
    probe.way = 0.02
    refuted.served(w, probe)
    assert math.isclose(w.charge.ceiling, (10_000 + RATE * 20.02) / (47 * 212))
    assert math.isclose(w.charge.paced, (10_000 + RATE * 19.22) / (47 * 212))
    assert w.tracks[1].ceiling == w.charge.paced
    assert math.isclose(bounds.bucketed(w, probe, rounded=False, late=True), w.charge.paced)


def test_a_burst_admitted_before_the_minute_is_dated_before_it_once_ours_served_show_it(
        ) -> None:
    """40 of ours of 212 tokens admitted at :59.2 (the margin 0.82 s: they may arrive after
    :00), then 9 more after :00, all served: 49 at our bare estimates, 47 a window. A fixed
    window from :00 counting the 40 would have refused some: it counted ours from the clocks'
    skew before it (``apart.straddled``). Not so while ours served after :00 fit it, nor
    when ours after it overflow it alone (the burst at :00: no fixed window from :00)."""
    def served(w: Window, at: float) -> None:
        w.add(at, 212).used = 212

    w = cold_window(0.82)
    for _ in range(40):
        served(w, 59.2)
    for i in range(9):
        assert (apart.straddled(w, w.tracks[1], 60.0, 62.0 + 2 * i) is None) == (40 + i <= 47)
        served(w, 62.0 + 2 * i)
    assert apart.straddled(w, w.tracks[1], 60.0, 79.0) == pytest.approx(59.95)
    late = cold_window(0.82)
    for at in [60.0] * 40 + [62.0 + 2 * i for i in range(9)]:
        served(late, at)
    assert apart.straddled(late, late.tracks[1], 60.0, 79.0) is None


@pytest.mark.parametrize("phase", [0.0, 10.0, 50.0, 55.0])
async def test_a_cold_silent_bucket_learns_its_charge_at_any_phase(phase: float) -> None:
    """The README stack with only the quotas against a 60 RPM, 10,000 TPM token bucket that
    says nothing (a 429 says when to retry), charging our estimate, 3x its 47 calls a minute
    at once ``phase`` s into a minute, the opening burst 0.8 s on the way (later requests
    10 ms): at most one 429, within 1.05x the server's ideal. Before, the factor stayed near
    the opening one's (1.05-1.14x) for a minute or more: 1.10x at :00, 1.08x at :10, 1.09x at
    :50 (``bench_composition.py``'s cold table)."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False)
    first: list[float] = []

    def latency(_rng: object) -> float:  # the trips started within a second of the first
        now = asyncio.get_running_loop().time()
        if not first:
            first.append(now)
        return COLD if now < first[0] + 1.0 else WARM

    server.send_latency = latency
    layer, wall, ideal = await run(server, phase, 141, jitter=None)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, wall / ideal)


async def test_a_cold_silent_bucket_started_as_the_burst_straddles_the_minute() -> None:
    """The bucket above started at :59.2: the opening burst, admitted before the minute,
    arrives after it (0.8 s on the way), so a fixed window from the minute may count it and
    the first probe of the shape waited for the next minute. The charge's probes served after
    the burst (49 of ours within 20 s, 47 a window at our bare estimates) leave no sliding
    window, nor a fixed one that counted the burst after the minute: paced as a sliding log
    until the next minute all the same, nothing sent for 41 s, 1.11x the ideal. The probe
    goes once they show it (``apart.straddled``), the fixed window from the minute then
    counting the burst before it: 1.01x."""
    await test_a_cold_silent_bucket_learns_its_charge_at_any_phase(59.2)
