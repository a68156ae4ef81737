"""A server that says nothing, its first probe served just after a clock minute: a fixed window
from that minute or a token bucket, paced within both (``_admission.ratelimit.silent``) at a
charge factor that is a guess until probes bound it (``probing.py``, ``apart.py``,
``bounds.py``). Started late in a minute (:45-:55) the opening burst and the probes of the
charge leave the minute before short of a fixed window's count, so nothing tells the two apart
at the first probe (``apart.overflowed``) and the guess paced the rest. Each case was seen in
``benchmarks/bench_composition.py --phases 0,5,...,55``. Virtual time, the wall clock pinned
to the loop's; the pure parts tested directly."""


import pytest

from llmguard._admission.ratelimit import bounds, probing, refuted, silent
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import FixedWindowServer, SlidingWindowServer, TokenBucketServer
from late_start import run

MARGIN = 0.05
STRICT = 1 / 0.9  #: OpenAI counts a request's characters, framing included: 1.11x ours


def bucket(factor: float = 1.0) -> TokenBucketServer:
    return TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=factor,
                             rate_limit_headers=False)


@pytest.mark.parametrize("phase", [45.0, 50.0, 55.0])
async def test_a_silent_bucket_started_late_is_paced_to_its_own_rate(phase: float) -> None:
    """141 calls (3x the 47 of 212 tokens it refills a minute), the bucket charging our
    estimate. Before: 1.11x, 1.09x and 1.05x the ideal at :45, :50 and :55, no 429: within
    both, each probe beyond the bucket as we count ours was served, and the factor came down
    only to the highest a fixed window from the minute could have admitted it at, ours of
    that minute alone (a whole minute's room early in it): 1.15x kept to :110, 41 a minute
    where it admits 47. A fixed window's factor is bounded by every probe it served, ours
    surely counted in each one's minute (``bounds.clocked``): the factor comes down to what
    either allows, and the minute's count, spent, tells them apart. No time on the way (the
    benchmark's first table; 0-10 ms of it at :50, the factor probed down to 1.004x before the
    minute's count was spent: one beyond the bucket refused, a sliding log from then on, one
    429 and 1.09x). At :55 then 1.10x: each probe beyond the bucket at the factor both
    shapes share (a fixed window's bound, high until its minute fills) brought it down ~0.4%.
    The bucket paced at the most a bucket charges (``carry.charged``), each probe beyond
    it lowers that by a request's share, and the minute's count is spent by :116: 1.00x.
    Since the probes whose answers would come after the minute go two round trips apart
    (``served.served_at``: a fixed window charging our estimate from :55 filled 42 of 47,
    1.90x), the opening minute holds 47 and bounds a fixed window's factor to 1.0 at once:
    the probes beyond the bucket walk the factor down to what it charges by :80, and the next
    one beyond is refused (a bucket run dry: learned), one 429 where the walk from 1.15x had
    spent the minute's count first. The one 429 that learns the shape, 1.00-1.01x."""
    server = bucket()
    layer, wall, ideal = await run(server, phase, 141, jitter=0.0)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.02 * ideal, (wall, ideal, layer.statistics().shape)
    assert layer.statistics().shape.startswith("bucket"), layer.statistics().shape


@pytest.mark.parametrize("phase", [45.0, 50.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_a_strict_silent_bucket_started_late_refuses_one_request(
        phase: float, seed: int) -> None:
    """The bucket charging 1.11x our estimate, 126 calls (3x its 42 a minute). Before: 1.10x
    the ideal, 2 429s at :45 (seed 1): a probe of the charge and one beyond the bucket went
    at the same instant once the first probe was served, and both were refused. One probe at
    a time: the shape's waits for the charge's answer (``silent.due``)."""
    server = bucket(STRICT)
    layer, wall, ideal = await run(server, phase, 126, seed)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)


@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_strict_silent_fixed_window_started_at_55_fills_its_minutes(
        retry_after: bool) -> None:
    """A fixed clock-minute window charging 1.11x our estimate, 126 calls (3x its 42 a
    minute) from :55, its 429 with a retry-after or bare. Before: 1.90x the ideal, paced at
    the guessed 1.15x (41 a minute where it admits 42, the 126th call a minute late). Now
    the factor comes down to what a fixed window's probes allow; the probe of the charge
    refused at :58 measures it from ours of that minute alone (``bounds.fitted``: from all
    ours in a window, those of the minute before included, 1.09x, and a bare 429's retry a
    second later was refused too). One 429; the first probe goes again after the minute
    (1.09x the ideal). With the bucket paced at the most a bucket charges, the minute fills
    by :106, its probe of the charge is refused there and the factor kept fits the minute's
    42 (``bounds.unrefilled``, ours counted at that most): 1.03x, 1.06x with a bare 429."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                               rate_limit_headers=False, retry_after=retry_after)
    layer, wall, ideal = await run(server, 55.0, 126)
    assert server.statistics().rate_limited <= 1
    most = 1.04 if retry_after else 1.07
    assert wall <= most * ideal, (wall, ideal, layer.statistics().shape)
    assert layer.statistics().shape.startswith("fixed"), layer.statistics().shape


async def test_a_strict_mute_sliding_window_started_at_55_is_paced_to_what_it_admits() -> None:
    """The benchmark's strict "sliding window (rpm), no headers, bare 429" from :55: the first
    probe, just after the minute, is refused (a sliding window learned), the 43rd request of
    236 tokens in the window. Before: 1.49x the ideal: the factor kept was what the charge's
    probes before the minute allowed (1.15x, 41 a window where it admits 42: the 126th call
    a window late), not what the 42 it admitted, sent seconds before, allow. Ours sent a
    margin or more before the refused one surely reached the server first and were admitted:
    they bound the factor (1.118x). One 429, 1.03x. Since the probes whose answers would come
    after the minute go two round trips apart (``served.served_at``), the charge's 43rd is
    refused at :59.1 (it learns the factor, 1.118x) and the shape's at :60.1: two 429s, the
    charge's and the shape's, as from :00-:50 (a fixed window that says nothing, charging
    our estimate from :55, needs the probes that fast: 1.90x -> 1.03x)."""
    server = SlidingWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                                 rate_limit_headers=False, retry_after=False)
    layer, wall, ideal = await run(server, 55.0, 126)
    assert server.statistics().rate_limited <= 2
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
    assert layer.statistics().shape.startswith("sliding"), layer.statistics().shape



@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_a_strict_mute_sliding_window_started_on_the_minute_refuses_one_request(
        seed: int) -> None:
    """The same server from :00. Before: 2 429s on its token quota: the probe of the charge at
    :06 (the 43rd of the minute, as 1.11x admits 42), then the probe of the shape at :62, the
    head of the line, which the sliding log admitted 2 s later anyway (the charge's probe at
    :04 left then): a fixed window from :60 would have gained it 2 s. A probe of the shape
    goes only where the sliding log holds the line back a tenth of a window or more
    (``silent._first``): none here, one 429 (started at :40, 40 s: probed)."""
    server = SlidingWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                                 rate_limit_headers=False, retry_after=False)
    layer, wall, ideal = await run(server, 0.0, 126, seed)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)

def tokens_window() -> Window:
    """One learned 10,000 TPM quota (and 60 RPM) whose answers came without any header."""
    w = Window((Quota(60, 60.0 + MARGIN, False, learn=True, margin=MARGIN),
                Quota(10_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN)))
    w.shape.quiet = True
    return w


def test_a_fixed_window_s_factor_is_bounded_by_ours_in_the_probe_s_minute_alone() -> None:
    """Ours sent before the minute (a margin or more past its start) are no fixed window's
    count of it: 10 of 212 at :50, 20 from :00, the probe at :10 served bounds a fixed
    window's factor to (10,000 - 21) / (21 x 212) (each count rounded up), not to 10,000 over
    all 31 (a window's)."""
    w = tokens_window()
    for _ in range(10):
        w.add(50.0, 212)
    for _ in range(20):
        w.add(60.2, 212)
    probe = w.add(70.0, 212)
    assert bounds.minute_of(w, probe) == (21 * 212, 21, 10_000)
    assert bounds.clocked(w, probe) == pytest.approx((10_000 - 21) / (21 * 212))
    assert w.charge.clocked == pytest.approx((10_000 - 21) / (21 * 212))
    assert bounds.minute_of(w, probe, before=True)[1] == 20


def test_the_shape_s_probe_waits_for_the_charge_s_answer_once_both_are_paced() -> None:
    """Once the first probe was served (a fixed window or a bucket), no probe of the shape
    goes while one of the charge is in flight: both went at one instant, both refused."""
    w = tokens_window()
    w.shape.served, w.shape.candidate = True, 60.0
    entry = w.add(61.0, 212)
    w.charge.probing = entry
    entry.answered = 63.0
    assert probing.flying(w.charge, 62.0)
    assert silent.due(w, 62.0, 212) is None
    assert not probing.flying(w.charge, 63.5)  # answered: the shape's may go again


def test_a_learned_bucket_is_probed_only_within_what_it_holds() -> None:
    """A bucket learned from a server that says nothing, drained by ours at their bare
    estimates: no probe of the charge goes, though the answers' usage (12 tokens each) leaves
    room in a window were unused tokens given back. The give-back probe went into a bucket
    our burst had drained: a 429 (``probing.probes``)."""
    w = tokens_window()
    w.shape.learn("bucket", "learned")
    w.charge.silent = True
    for entry in [w.add(0.0, 212) for _ in range(47)]:
        w.adjust(0.5, entry, 12)  # answered, 12 tokens used
    assert not probing.probes(w.charge, w, 1.0, 212)
    w.shape.kind = "unknown"  # not learned: the give-back probe may go
    assert probing.probes(w.charge, w, 1.0, 212)


@pytest.mark.parametrize("both", [True, False])
def test_a_refusal_while_both_are_supposed_fits_the_minute_s_count(both: bool) -> None:
    """A 429 on tokens at :58 while a fixed window and a bucket are both supposed: the
    factor kept is at least what fits ours of that minute (41 of 212 admitted, the 42nd
    refused: 10,000 - 41 over 41 x 212), not what fits all ours in a window (10 more sent
    at :59 of the minute before: 1.09x for a fixed window charging 1.11x, and a bare 429's
    retry a second later was refused too)."""
    w = tokens_window()
    w.charge.silent, w.charge.windowed = True, 1.02
    if both:
        w.shape.served, w.shape.candidate = True, 60.0
    for _ in range(10):
        w.add(59.0, 212)
    for i in range(41):
        w.add(61.0 + i, 212)
    ticket = w.add(118.0, 212)
    w.charge.factor = 1.02
    assert w.charge.refused(w, 118.1, ticket, 10_000)
    fits = (10_000 - 41) / (41 * 212)
    assert (w.charge.factor >= fits) is both, w.charge.factor


def test_a_429_bounds_what_a_bucket_charges_from_below_and_a_served_probe_from_above() -> None:
    """``refuted``: 41 of ours of 212 tokens at 0 s, the 42nd refused at 1 s: a bucket full
    at most, refilling 10,000 a window, refused it only charging more than (10,000 + a
    second's refill) over 42 x 212 (the floor); a probe served says it charges at most what
    admitted it (the ceiling). A floor above the ceiling: no bucket, a fixed window."""
    w = tokens_window()
    for _ in range(41):
        w.add(0.0, 212)
    ticket = w.add(1.0, 212)
    refuted.refused(w, ticket)
    track = bounds.bucket_of(w)
    floor = (track.limit + track.limit / track.window * 1.0) / (42 * 212)
    assert w.charge.floor == pytest.approx(floor)
    assert not refuted.bucketless(w.charge)  # no probe served yet: the ceiling is infinite
    w.charge.ceiling = floor - 0.01
    assert refuted.bucketless(w.charge)


def test_a_429_a_window_of_requests_explains_bounds_no_bucket_of_tokens() -> None:
    """59 of ours of 10 tokens in the minute and the 60th refused: the 60 RPM quota refused
    it, which says nothing of what a token bucket charges (the floor stays 0)."""
    w = tokens_window()
    for _ in range(59):
        w.add(0.0, 10)
    ticket = w.add(1.0, 10)
    refuted.refused(w, ticket)
    assert w.charge.floor == 0.0
