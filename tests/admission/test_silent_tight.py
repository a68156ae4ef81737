"""A tight token quota on a server that says nothing: 10,000 TPM charging exactly our estimate
(212 a call: 47 a minute), no rate-limit header (a 429's ``retry-after`` only, or a bare 429),
3x its quota (141 calls) through the README stack with only the quotas given, started late in
a clock minute: the tight table of ``benchmarks/bench_composition.py`` (``--tight``). The
opening burst goes at the opening factor (1.15x: 40 of 47), and only probes, one at a time,
find the other 7 (``probing.py``): a minute that ends before they do is a minute short for
the whole run (141 calls in three minutes, none to spare). Virtual time, the wall clock
pinned to the loop's; the pure parts directly."""

import math

import pytest

from llmguard._admission.ratelimit import probing, refuted, served
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import FixedWindowServer, SlidingWindowServer
from late_start import run

MARGIN = 0.05


def silent_window() -> Window:
    """One learned 10,000 TPM quota (and 60 RPM) whose answers came without any header."""
    w = Window((Quota(60, 60.0 + MARGIN, False, learn=True, margin=MARGIN),
                Quota(10_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN)))
    w.shape.quiet = True
    w.charge.silent = True
    return w


def test_a_probe_answered_after_the_minute_lets_the_next_go_two_round_trips_on() -> None:
    """40 of ours at :55 (the opening factor), answered 2 s later, and a probe of the charge
    sent at :57: its answer comes within the minute, the next waits for it (a 429 then tells
    a bucket charging the factor from a window charging less: its refill since). Sent at
    :59, its answer would come after the minute: the next goes two round trips on (the
    margin, measured from them), when a 429 would have come back. One still queued below
    (not sent) is no probe yet."""
    w = silent_window()
    for entry in [w.add(55.0, 212) for _ in range(40)]:
        entry.answered = 57.0
    probe = probing.probe(w.charge, w, 57.0, 212)
    assert w.charge.probing is probe and probing.flying(w.charge, 57.2)
    assert served.served_at(w, probe) == math.inf
    assert not probing.probes(w.charge, w, 57.2, 212)
    probe.answered = 59.0
    probe = probing.probe(w.charge, w, 59.0, 212)
    assert w.charge.probing is probe
    assert served.served_at(w, probe) == pytest.approx(59.0 + served.QUIET * MARGIN)
    assert not probing.probes(w.charge, w, 59.05, 212)
    assert probing.due(w.charge, w, 59.05, 212) == pytest.approx(59.1)
    assert probing.probes(w.charge, w, 59.1, 212)
    probe.queued = 1
    assert served.served_at(w, probe) == math.inf
    assert probing.due(w.charge, w, 59.1, 212) is None


def _burst_and_two_probes() -> tuple[Window, object]:
    """40 of ours at :00 (the opening factor), answered at :02; a probe of the charge then,
    answered at :04 (served: it bounds what a bucket charges, ``Charge.ceiling``), and the
    next one sent then, in flight: the window and that one."""
    w = silent_window()
    for entry in [w.add(0.0, 212) for _ in range(40)]:
        entry.answered = 2.0
    probing.probe(w.charge, w, 2.0, 212).answered = 4.0
    return w, probing.probe(w.charge, w, 4.0, 212)


def test_a_probe_early_in_the_minute_counts_as_served_once_a_429_would_refute_a_bucket(
        ) -> None:
    """Started at :00, each probe of the charge waited for its answer (2 s): the minutes
    after the first repeated their spacing in the sliding log (a tight fixed window: 1.12x
    the ideal). Now one counts as served once a 429 to the next would refute every token
    bucket that served the probes (``refuted.bucketless``): before its answer, later than
    two round trips (a 429 there, a bucket charging what the probes allow refilled too
    little to refuse it, left a sliding window's shape probed: a second 429)."""
    w, second = _burst_and_two_probes()
    at = served.served_at(w, second)
    assert second.time + served.QUIET * MARGIN < at < 6.0  # (its answer: 2 s after it)
    for sent, refutes in [(second.time + served.QUIET * MARGIN, False), (at, True)]:
        w, _ = _burst_and_two_probes()
        refuted.refused(w, probing.probe(w.charge, w, sent, 212))  # a 429 to the next
        assert refuted.bucketless(w.charge) is refutes, (sent, w.charge.floor,
                                                          w.charge.ceiling)


def test_when_a_probe_may_go_is_not_asked_of_a_later_moment_now() -> None:
    """The next probe of the charge may go seconds ahead (a bucket's refill,
    ``served.refuting``): asked now whether one may go then, the logs expired ours as of
    then, and one of ours still in the window left it early (the property test's 4 requests
    within 60 s at ``rpm=3``). Asked again then."""
    w = silent_window()
    old = w.add(-55.5, 212)  # leaves the window at 4.55
    old.answered = -53.5
    for entry in [w.add(0.0, 212) for _ in range(39)]:
        entry.answered = 2.0
    probing.probe(w.charge, w, 2.0, 212).answered = 4.0
    second = probing.probe(w.charge, w, 4.0, 212)
    at = served.served_at(w, second)
    assert 4.6 < at < math.inf
    requests = w.tracks[0].log
    counted = requests.used
    assert probing.due(w.charge, w, 4.01, 212) == at
    assert requests.used == counted and old in requests.entries


def test_the_give_back_test_waits_for_the_answers() -> None:
    """47 of ours in the window at their bare estimates (no room for one more), the answers'
    usage (12 tokens each) leaving room were unused tokens given back: that probe, whose 429
    is read against a bucket's refill since ours went, goes only once the last probe was
    answered (sent two round trips after it, a fixed window charging our estimate was kept at
    the 1.043x a bucket allowed: 45 a minute where it admits 47, 1.49x the ideal)."""
    w = silent_window()
    for entry in [w.add(57.0, 212) for _ in range(46)]:
        w.adjust(58.5, entry, 12)
    last = w.charge.probing = w.add(59.0, 212)
    assert served.served_at(w, last) < 59.5
    assert not probing.probes(w.charge, w, 59.5, 212)  # served as far as a 429 tells
    last.answered = 61.0
    assert probing.probes(w.charge, w, 61.0, 212)


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize(("retry_after", "phase"), [(True, 50.0), (True, 55.0), (False, 55.0)])
async def test_a_tight_silent_fixed_window_started_late_fills_its_first_minute(
        retry_after: bool, phase: float) -> None:
    """Before: 1.83x and 1.90x the ideal from :50 and :55 (the same with a bare 429): each
    probe waited for its answer (2 s), the opening minute ended at 42 of 47 (41 and 42 a
    minute after it, at the factor those bounded), the last 15 calls a minute late. Now the
    probes whose answers come after the minute go two round trips apart (a server refuses
    at arrival, its 429 comes back within one): 47 by :59.5. At most one 429."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                               retry_after=retry_after)
    layer, wall, ideal = await run(server, phase, 141)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)


@pytest.mark.xfail(strict=True, reason=(
    "#30: the give-back test before the minute and the shape's probe after it are both "
    "refused (2 429s of 141); holding the test for the probe (whose 429 shows both) fixes "
    "this and loses what a silent bucket's service of the test tells"))
@pytest.mark.parametrize("phase", [20.0, 40.0])
async def test_a_tight_mute_sliding_window_started_mid_minute_refuses_one_request(
        phase: float) -> None:
    """A sliding window of 60 requests and 10,000 tokens charging exactly our estimate, no
    header, a bare 429. The probes of the charge end at 47 at their bare estimates by :33
    (:53), answered; the give-back test goes then (a 429: the server keeps ``max_tokens``
    charged), and the shape's probe just after the minute is refused too (a sliding
    window): 2 429s of 141 (1.4%), one more than from :00. That probe's 429 shows both
    (ours at what their answers used had room: ``probing.kept``), and the give-back test
    held for it (``probes``: not while ``silent.quiet(shape)`` with a candidate not yet
    served) takes one 429 here; but a silent bucket serves that test in the first minute,
    which overflows a fixed window and tells a bucket at the boundary: held, strict silent
    bucket from :20 went 1.00x -> 1.02x, and
    ``test_a_silent_token_bucket_is_learned_at_the_first_probe_after_an_overflowed_minute``
    and ``test_stray_429s_leave_a_silent_token_bucket_its_charge[random 5 %]`` failed.
    Until the test is sent, the two servers have shown the same. Held again on 8d28b76:
    the same trade. The first of those tests failed only on its reason (a bucket learned
    by the probe beyond a fixed window: 0 429s, 90 by +58 s); in the second, no minute
    overflowed, and with the stray 429s the shape's probe served was read as no fixed
    window (``learn._settled``: "reports no remaining"), a sliding one: 1.00x -> 1.13x the
    ideal. Only the test (a bucket serves it, a window refuses it) tells a bucket in
    the first minute, and only the shape's probe a fixed window from a sliding one: a
    sliding window refuses both. Held on ec23a30 only while a first probe is supposed
    (``shape.candidate``; held from :00 too, the test's 429 a minute late read as a fixed
    window's: 22 429s): the same trade, the strict silent bucket from :20 120 -> 122 s (paced
    within both, one fewer by +47 s; its dry probe's 429 read less one of ours sent after it
    that may have arrived first, 2 s to the next), both ways from :40 121 -> 122 s."""
    server = SlidingWindowServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                                 retry_after=False)
    layer, wall, ideal = await run(server, phase, 141)
    shape = layer.statistics().shape
    assert server.statistics().rate_limited <= 1, shape
    assert shape.startswith("sliding"), shape
    assert wall <= 1.10 * ideal, (wall, ideal, shape)


#: #30, open: started at :00, the clock minute supposed is never confirmed (a sliding window
#: and a fixed one are told apart only by a probe a sliding window refuses, a second 429 once
#: the charge's refuted a bucket), so each minute after the first repeats in the sliding log
#: the first one's probes of the charge: an answer apart before (1.12x), now as soon as a 429
#: would refute a bucket (1.09x). Sent two round trips apart all along (1.02x), one refused
#: leaves a bucket charging a little more than the probes allow possible: a strict fixed
#: window from :00 kept at 1.15x (1.49x) and a strict mute sliding window probed for its
#: shape (a second 429); keeping a window's bound beside the bucket's for the fixed count
#: while both are supposed fixed the first (1.02x), not the second. Measured on 8d28b76 with
#: no refuting wait (``served_at``: two round trips): this tight table's headerless fixed
#: and mute sliding windows from :00 1.02x (one 429: the give-back test, an answer after
#: the 47th, still refutes a bucket), :58/:59 1.04x; the strict table's bare-429 fixed and
#: mute sliding windows from :00 1.49x (4 429s on the sliding one; the 43rd refused 0.1 s
#: after the 42nd, kept at 1.15x as a window's count: 40 a minute of 42), the mute sliding
#: one from :59 94 429s, headerless buckets from :20-:55 2-5 429s. No probe schedule
#: serves both: the two tables differ only once a probe is refused, and a 429 refutes the
#: buckets that served the probes only a request's refill (1.5 s at the ceiling the first
#: probe leaves, 1.19x: the slots split the opening burst at 2 s) after the last served.
#: So each probe waits a request's refill (212 tokens at 166.7 a second: 1.27 s or more),
#: the 47th at +9.6 s at the soonest (1.08x; 1.05x needs it by +6.1 s). Two round trips
#: apart again on 65b9c37, the strict silent bucket from :00 was refused 0.1 s after its
#: 44th (+2.4 s), a sliding window of 44 as possible: 1.01x -> 1.03x, :20/:40 2 and 5 429s.
FROM_ZERO = pytest.mark.xfail(strict=True, reason="#30: a tight silent fixed window from :00 "
                              "repeats its first minute's probe spacing (1.09x)")


@FROM_ZERO
@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_tight_silent_fixed_window_started_at_the_minute_drops_to_its_charge(
        retry_after: bool) -> None:
    """1.12x the ideal from :00 before, 1.09x now (each minute's last probes of the
    charge, repeated by the sliding log, a second or more apart). Within 1.05x the ideal, at
    most one 429."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                               retry_after=retry_after)
    layer, wall, ideal = await run(server, 0.0, 141)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_tight_silent_fixed_window_started_at_the_minute_probes_its_charge_sooner(
        retry_after: bool) -> None:
    """From :00, the probes of the charge went an answer apart (2 s; 7 of them to :16), and
    the sliding log repeated that spacing every minute after: 1.12x the ideal (136 s of 122).
    Each now counts as served once a 429 to the next would refute a bucket (1.2-1.5 s
    apart, to :10): 1.09x (133 s), still the one 429 (the charge's)."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                               retry_after=retry_after)
    layer, wall, ideal = await run(server, 0.0, 141)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.10 * ideal, (wall, ideal, layer.statistics().shape)


#: #30, open: the tight mute sliding window repeats its first window's probes of the charge
#: (42nd at +4 s, then one a bucket's refill apart, 1.5 s, the 47th at +11 s) in every window
#: after it: the last window's 47th at +131 s where the ideal ends at 122 s. A sliding window
#: admits a request a window after one it served, so the first window's spacing is the run's.
#: The 47th has to go by +6 s (the 141st by +126 s); at a request's refill apart it goes at
#: +11 s: see ``FROM_ZERO`` for what sooner probes cost the strict table. From :50, probes
#: two round trips apart whenever the room's at the refuting pace would not all go before
#: the minute ends (``served_at``'s end-of-minute rule widened) moved no cell here: once the
#: sooner ones lower the ceiling, the rest fit just before the minute (47 by :58, 1.07x);
#: the strict headerless bucket from :55 took a second 429 (1.00x -> 1.03x).
SPACED = pytest.mark.xfail(strict=True, reason="#30: a tight mute sliding window repeats its "
                           "first window's probe spacing (1.07-1.09x)")


@SPACED
@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize("phase", [0.0, 50.0])
async def test_a_tight_mute_sliding_window_fills_its_first_window_within_six_seconds(
        phase: float) -> None:
    """The tight mute sliding window started at :00 (1.09x: the charge's probes to +11 s)
    and at :50 (1.07x: to +8.3 s, the last three two round trips apart once their answers
    would come after the minute). Within 1.05x the ideal, at most one 429."""
    server = SlidingWindowServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                                 retry_after=False)
    layer, wall, ideal = await run(server, phase, 141)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
