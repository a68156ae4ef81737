"""A server that says nothing, paced within a fixed window and a token bucket at once
(``_admission.ratelimit.silent``): the bucket is paced at the most a bucket charges over our
estimates, as the probes it served showed (``Charge.paced``, ``refuted.py``), not at the
factor both share (a fixed window's bound stays high until its minute fills), and a probe it
refuses where no sliding window would is a bucket run dry. Each case was seen in
``benchmarks/bench_composition.py --phases 0,30,45,50,55`` (the strict and cold tables).
Virtual time, the wall clock pinned to the loop's; the pure parts tested directly."""

import asyncio
import math
from typing import Any

import pytest

from llmguard._admission.ratelimit import bounds, refuted, silent
from llmguard._admission.ratelimit.carry import charged
from llmguard._admission.ratelimit.named import Named
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import TokenBucketServer
from late_start import run

MARGIN = 0.05
STRICT = 1 / 0.9  #: OpenAI counts a request's characters, framing included: 1.11x ours


def tokens_window() -> Window:
    """One learned 10,000 TPM quota (and 60 RPM) whose answers came without any header."""
    w = Window((Quota(60, 60.0 + MARGIN, False, learn=True, margin=MARGIN),
                Quota(10_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN)))
    w.shape.quiet = True
    w.charge.silent = True
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_a_strict_silent_bucket_started_at_55_is_learned_from_its_one_429(
        seed: int) -> None:
    """The bucket charging 1.11x our estimate, 126 calls (3x its 42 a minute) from :55. Before:
    the probe beyond the bucket refused at :72 was read as a sliding window's, and the sliding
    log paced at the factor that 429 kept (1.12x: 41 a minute where it admits 42), 1.07x the
    ideal. But a probe served at :70 had overflowed any sliding window of the quota at our
    bare estimates: a bucket run dry refused it (``refuted.slideless``), paced at the most the
    probes allow it charges, 1.01-1.02x. Since the probes whose answers would come after the
    minute go two round trips apart (``served.served_at``), the charge's 46th is refused at
    :59.4 (1.12x kept: a bucket refilled since the burst) and no probe refused after it: paced within both a fixed window and a
    bucket (the shape left unknown), 1.00-1.01x; never a sliding log."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                               rate_limit_headers=False)
    layer, wall, ideal = await run(server, 55.0, 126, seed)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.03 * ideal, (wall, ideal, layer.statistics().shape)
    assert not layer.statistics().shape.startswith("sliding"), layer.statistics().shape


def cold() -> Any:
    """``send_latency``: 0.8 s for the trips of the first second (a cold network), then 10 ms."""
    first: list[float] = []

    def latency(_rng: Any) -> float:
        now = asyncio.get_running_loop().time()
        first.append(now) if not first else None
        return 0.8 if now < first[0] + 1.0 else 0.01

    return latency


async def test_a_silent_bucket_on_a_cold_network_is_bounded_by_the_charge_s_probes_too() -> None:
    """141 calls from :55, the bucket charging our estimate, the opening burst 0.8 s on the way
    (the margin covers it for a minute). Before: 1.14x the ideal, only the probes of the shape
    bounded what a bucket charges and none did below the factor until :144; the probes of the
    charge served bound it too (1.07x). Then each probe bounded it as of the margin after it
    went (0.8 s of refill more than its own 20 ms way allows), and the probes went one an
    answer apart wherever the bucket as we count ours stood: none bounded it below the factor
    until :118. Now a probe's own way bounds it (``bounds.bucketed``), and a probe of the
    factor goes where served it can bound it lower (``holds.telling``): the bucket run dry,
    the one 429 the shape is learned from (1.02x)."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False,
                               send_latency=cold())
    layer, wall, ideal = await run(server, 55.0, 141, jitter=0.0)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
    assert layer.statistics().shape.startswith("bucket"), layer.statistics().shape


def test_the_bucket_counts_ours_at_its_ceiling_only_while_both_are_supposed() -> None:
    """A served probe bounds what a bucket charges (``refuted.served``: 1.02x, 47 of 212 tokens
    in 10,000 and a second's refill; as paced, ours in flight taken to arrive a margin late,
    a little less): the token track counts ours at that most as paced while the shape is
    unknown (each rounded up, never above our count), as we count them once a shape is
    learned; the requests track as ever."""
    w = tokens_window()
    requests, tokens = w.tracks
    entry = w.add(0.0, 212)  # at the opening factor, 1.15x: 244
    for _ in range(45):
        w.add(0.0, 212)
    probe = w.add(1.0, 212)  # 47 admitted within 10,000 and a second's refill
    refuted.served(w, probe)
    ceiling, paced = w.charge.ceiling, w.charge.paced
    assert 1.0 <= paced < ceiling < 1.15 and tokens.ceiling == paced
    assert requests.ceiling == math.inf and charged(requests, entry) == 1
    assert charged(tokens, entry) == math.ceil(212 * paced - 1e-9) < entry.tokens
    w.shape.learn("bucket", "learned")
    assert charged(tokens, entry) == entry.tokens


@pytest.mark.parametrize("sent", [46, 47])
def test_a_refusal_is_a_dry_bucket_s_when_an_answered_one_overflowed_any_sliding_window(
        sent: int) -> None:
    """``sent`` of ours of 212 tokens at :00 and one at :30, answered; a probe at :61 refused.
    48 of them (10,176 tokens at our bare estimates, the least a server charges) within a
    window overflow any sliding window of 10,000: none admitted the one at :30, so a bucket
    run dry refused the probe; 47 (9,964) fit one, which may have refused it."""
    w = tokens_window()
    for _ in range(sent):
        w.add(0.0, 212)
    last = w.add(30.0, 212)
    w.adjust(32.0, last, 212)  # answered
    ticket = w.add(61.0, 212)
    assert refuted.slideless(w, ticket) is (sent == 47)
    w.charge.floor, w.charge.ceiling = 1.2, 1.1  # a 429 refuted every bucket
    assert not refuted.slideless(w, ticket)


def test_a_refusal_a_window_of_requests_explains_shows_a_bucket_only_if_it_names_tokens() -> None:
    """59 of ours of 150 tokens at :00 and one of 1,200 at :30, answered (10,050 tokens: no
    sliding window of 10,000 admitted it), a probe at :59 refused: the 61st request within a
    window, which a sliding window of 60 requests refuses too. A 429 naming the tokens
    (OpenAI's "on tokens per min (TPM)") is a dry bucket's all the same (a strict bucket
    started at :45: 1.047x -> 1.040x the ideal)."""
    w = tokens_window()
    for _ in range(59):
        w.add(0.0, 150)
    last = w.add(30.0, 1_200)
    w.adjust(32.0, last, 1_200)  # answered
    ticket = w.add(59.0, 150)
    assert not refuted.slideless(w, ticket)
    assert not refuted.slideless(w, ticket, Named(tokens=False))
    assert refuted.slideless(w, ticket, Named(tokens=True))


def test_no_probe_beyond_the_bucket_once_a_429_bracketed_what_it_charges() -> None:
    """Paced at the most a bucket charges, a probe beyond it where a 429 showed it charges
    nearly that much would be a second 429 (a strict bucket at :00 with 6x the quota): none
    goes once the floor is known and the ceiling (as paced) is under the factor we count."""
    w = tokens_window()
    w.charge.factor, w.charge.paced = 1.12, 1.117
    assert not silent.bracketed(w.charge)  # no 429 yet: its probe is the one allowed
    w.charge.floor = 1.112
    assert silent.bracketed(w.charge)
    w.charge.paced = 1.13  # paced at the factor, as before
    assert not silent.bracketed(w.charge)


def test_a_429_naming_the_tokens_bounds_what_a_bucket_charges_though_our_requests_look_full(
        ) -> None:
    """60 of ours of 150 tokens within a minute, then one refused at :59: a window of 60
    requests may have refused it (no floor), unless its message names the tokens (a strict
    fixed window with bare 429s from :55: ours of two minutes filled the requests' sliding
    window, the floor above the ceiling went unseen, and the shape stayed unknown a minute
    more: 1.06x the ideal)."""
    w = tokens_window()
    for _ in range(59):
        w.add(0.0, 150)
    ticket = w.add(59.0, 150)
    refuted.refused(w, ticket)
    assert w.charge.floor == 0.0
    refuted.refused(w, ticket, Named(tokens=True))
    assert w.charge.floor > 0.0


def test_a_dry_bucket_s_429_telling_when_the_refused_one_fits_says_what_it_held() -> None:
    """40 of ours at :00 and the probe beyond the bucket at :55, refused as a bucket run dry,
    its 429 saying it fits 0.6 s after it arrived: the bucket held then our estimate (the
    least it charges) less 0.6 s of refill, not nothing (2.8 s to the next where 0.6 s
    sufficed: a strict silent bucket from :58, 1.03x the ideal). The probe taken to arrive as
    late as it may, a margin after it went: refilled no sooner. Without a pause told, nothing."""
    rate = 10_000 / 60
    for told, held in [(0.6, 212 - rate * (0.6 + MARGIN)), (None, 0.0)]:
        w = tokens_window()
        track = w.tracks[1]
        for _ in range(40):
            w.add(0.0, 212)
        ticket = w.add(55.0, 212)
        w.shape.learn("bucket", "a probe was refused where no sliding window would")
        bounds.ceiled(w, 55.1, ticket, told=told)
        assert math.isclose(track.bucket.available(55.1), held + rate * 0.1, abs_tol=1.0), told


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_a_strict_silent_bucket_from_58_goes_on_when_its_429_says(seed: int) -> None:
    """The bucket charging 1.11x our estimate from :58 (126 calls): learned from the probe
    beyond it refused, its 429 asking 0.6 s, it was taken for empty then: 1.02-1.03x the ideal
    (two requests' refill before the next). Within 1.02x, one 429."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=STRICT,
                               rate_limit_headers=False)
    layer, wall, ideal = await run(server, 58.0, 126, seed)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.02 * ideal, (wall, ideal, layer.statistics().shape)
