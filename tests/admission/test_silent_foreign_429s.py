"""429s the quota did not cause (a provider's own overload, 5 % of requests asking 2 s) from a
server that says nothing (no rate-limit header; its 429s carry a Retry-After): the pause is
honoured, and what such a 429 would teach (a lower limit, "not a fixed window", a charge
factor) is only learned once a second 429 at the same count confirms it (:mod:`.repeat`).
The README stack with default settings, in virtual time."""

import asyncio
import random
from typing import Any

import llmguard as lg
import pytest

from llmguard._admission.ratelimit import repeat
from llmguard._admission.ratelimit.charge import OPENING
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import (FixedWindowServer, ProviderError, TokenBucketServer,
                              virtual_wall_clock)

MARGIN = 0.05


def window(limit: int = 10) -> Window:
    """One learned RPM quota whose answers came without any header."""
    w = Window((Quota(limit, 60.0 + MARGIN, False, learn=True, margin=MARGIN),))
    w.shape.quiet = True
    return w


def test_a_429_near_the_limit_lowers_it_only_when_repeated_at_that_count() -> None:
    """A 429 asking 2 s to the 10th of a quota of 10 would read "the server admits 9": only
    doubted (its pause honoured, the refused one not counted: the server counted none of
    it), the limit stays 10; the retry after the pause, refused at the same count, confirms
    it."""
    w = window()
    for _ in range(9):
        w.add(40.0, 0)
    tenth = w.add(45.0, 0)
    w.refused(45.05, tenth, 2.0)
    assert w.tracks[0].limit == 10 and w.tracks[0].log.used == 9
    assert w.paused_until == 47.05
    retry = w.add(47.1, 0)
    w.refused(47.15, retry, 2.0)
    assert w.tracks[0].limit == 9


def test_a_doubt_served_beyond_is_a_stray_429() -> None:
    """After the doubted 429 at 9 of ours, the server served a 10th in the same window: it
    admits more than the lesson says, so a later 429 at that count confirms nothing."""
    w = window()
    for _ in range(9):
        w.add(40.0, 0)
    first = w.add(45.0, 0)
    w.refused(45.05, first, 2.0)
    served = w.add(47.1, 0)
    w.adjust(49.1, served, 0)  # answered: the 10th of ours in the window
    track = w.tracks[0]
    assert repeat.served_beyond(w, track, 9, first.seq)
    again = w.add(49.2, 0)
    w.refused(49.25, again, 2.0)
    assert track.limit == 10


def test_two_429s_of_one_burst_are_no_repetition() -> None:
    """Two refused at once (a burst's, sent before the first 429 came back) are one doubt."""
    w = window()
    for _ in range(8):
        w.add(40.0, 0)
    ninth, tenth = w.add(40.0, 0), w.add(40.0, 0)
    w.refused(40.05, ninth, 2.0)
    w.refused(40.05, tenth, 2.0)
    assert w.tracks[0].limit == 10


def test_a_probe_refused_asking_less_than_a_sliding_window_would_is_a_stray_429() -> None:
    """The probe just after the minute, refused asking 2 s: a sliding window still counting
    our burst at :40 would ask until :40 (our oldest leaves), a bucket refilled 20 s since
    surely held it: no shape's refusal, the clock minute stays supposed (probed again), not
    a sliding log from then on. A bare 429 (the default pause, nothing asked) still reads as
    the sliding window's."""
    for pause, kind in ((2.0, "unknown"), (1.0, "sliding")):
        w = window()
        for _ in range(10):
            w.add(40.0, 0)
        probe = w.take(60.1, 0)
        assert probe is not None and w.shape.probe is probe
        w.refused(60.15, probe, pause)
        assert w.shape.kind == kind and w.shape.probes == (1 if kind == "unknown" else 0)


def tokens(rpm: int = 1000, tpm: int = 10_000) -> Window:
    """A learned RPM and TPM quota, nothing heard from the server yet."""
    return Window((Quota(rpm, 60.0, False, learn=True), Quota(tpm, 60.0, True, learn=True)))


def test_a_token_429_far_under_the_quota_is_only_doubted() -> None:
    """A stray 429 asking 2 s to the 9th of an opening burst of 40 (212 tokens each, the
    token quota the fullest): read as the server's count it took the factor to 3x (paced at
    a third); ours far under the limit as counted, it is only doubted."""
    w = tokens()
    entries = [w.take(0.0, 212) for _ in range(40)]
    w.refused(0.05, entries[8], 2.0)
    assert w.charge.factor == OPENING and w.charge.how == "opening"


def test_a_factor_kept_from_a_429_is_not_ratcheted_by_stray_ones() -> None:
    """The factor a 429 measured (a server charging 1.3x refused the burst's 36th, asking to
    the minute) is kept; a later 429 asking 2 s, ours near the limit as counted at it (every
    stray one is, under a saturated pace), raises it no further (each raised it 5 %: 1.15x
    to 3x in 15 minutes)."""
    w = tokens()
    entries = [w.take(0.0, 212) for _ in range(40)]
    w.refused(0.5, entries[35], 59.5, wall=0.5)
    kept = w.charge.factor
    assert w.charge.how == "kept" and kept == pytest.approx((10_000 - 35) / (35 * 212))
    later = [w.take(61.0, 212) for _ in range(30)]
    w.refused(61.05, later[-1], 2.0, wall=61.05)
    assert w.charge.factor == kept


class Refusing:
    """``server.acompletion`` behind a 429 (``retry-after: 2``, back in 50 ms, never seen by
    the server) to the arrivals ``refuse(now, n)`` picks (``n``: the arrival's number)."""

    def __init__(self, server: Any, refuse: Any) -> None:
        self.server, self.refuse, self.arrivals = server, refuse, 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.arrivals += 1
        if self.refuse(asyncio.get_running_loop().time(), self.arrivals):
            await asyncio.sleep(0.05)
            raise ProviderError("Rate limit reached", status_code=429,
                                headers={"retry-after": "2"})
        return await self.server.acompletion(**kwargs)


async def run(server: Any, refuse: Any, calls: int) -> tuple[float, float, lg.RateLimit]:
    """``calls`` at once through the README stack with only ``rpm=60``, 40 s into a minute,
    into ``server`` behind ``Refusing(refuse)``."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40 - loop.time()) % 60)
    pipeline = (lg.Pipeline(name="silent").metrics().cache(ttl=300).retry(attempts=4)
                .circuit_breaker().timeout(30).rate_limit(rpm=60).concurrency_limit(32))
    layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
    server.on_headers.append(layer.observe_headers)
    send = pipeline.wrap(Refusing(server, refuse))
    start = loop.time()
    await asyncio.gather(*(send(messages=[{"role": "user", "content": f"q {i}"}],
                                max_tokens=200) for i in range(calls)))
    return loop.time() - start, server.ideal_time(calls, start=start), layer


@pytest.mark.parametrize("seed", [None, *range(20)])
async def test_stray_429s_leave_a_silent_fixed_window_its_limit_and_its_minutes(
        seed: int | None) -> None:
    """A headerless fixed clock-minute window of 60 a minute, one arrival in 20 refused
    asking 2 s (None: three in the opening burst at :40, none while the probes learn the
    minute from :55 to :130; else at random, seeded, the probes' too): 300 calls take their
    five minutes and the pauses asked (1.01-1.03x). Read at their word, the opening burst's
    refused ones, counted, held the log full until :42 of the next minute with no probe at
    :00 (56 s idle with room), and later ones lowered the limit to 56 (1.31x)."""
    if seed is None:
        def refuse(now: float, n: int) -> bool:
            return n % 20 == 7 and not 55 < now < 130
    else:
        rng = random.Random(seed)

        def refuse(now: float, n: int) -> bool:
            return rng.random() < 0.05
    with virtual_wall_clock():
        server = FixedWindowServer(rpm=60, latency=2.0, rate_limit_headers=False)
        wall, ideal, layer = await run(server, refuse, 300)
    stats = layer.statistics()
    assert server.statistics().rate_limited == 0  # (the injected ones never reach it)
    assert stats.requests_limit == 60, stats.shape
    assert stats.shape.startswith("fixed"), stats.shape
    assert wall <= 1.05 * ideal, (wall, ideal, stats.shape)


async def bucket_run(refuse: Any, calls: int) -> tuple[float, float, lg.RateLimit]:
    """``calls`` at once through the README stack with only ``rpm=60, tpm=10_000``, 40 s into
    a minute, into a headerless token bucket (its tokens bind: 212 a call, 47 a minute)
    behind ``Refusing(refuse)``: wall time, the server's ideal, the layer."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40 - loop.time()) % 60)
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0, rate_limit_headers=False)
    pipeline = (lg.Pipeline(name="silent").metrics().cache(ttl=300).retry(attempts=4)
                .circuit_breaker().timeout(30).rate_limit(rpm=60, tpm=10_000)
                .concurrency_limit(32))
    layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
    server.on_headers.append(layer.observe_headers)
    send = pipeline.wrap(Refusing(server, refuse))
    request = {"max_tokens": 200}
    charge = server.charge(messages=[{"role": "user", "content": "q 100"}], **request)
    start = loop.time()
    await asyncio.gather(*(send(messages=[{"role": "user", "content": f"q {i}"}], **request)
                           for i in range(calls)))
    return loop.time() - start, server.ideal_time(calls, tokens=charge, start=start), layer


@pytest.mark.parametrize("stray", ["first probe", *(f"random 5 %, seed {s}" for s in range(20))])
async def test_stray_429s_leave_a_silent_token_bucket_its_charge(stray: str) -> None:
    """A headerless token bucket charging our estimate, 429s it did not cause asking 2 s:
    the first request after the opening burst's answers (the first probe of the charge,
    beyond the bucket as counted at the opening guess), or one arrival in 20 at random
    (seeded, 240 calls: the learning weighs more than in the bench's 470). Read at its word,
    the probe's 429 measured a factor of 1.31x and kept it: the bucket, as counted at it,
    seemed to serve beyond itself (a fixed window), then a 429 within that minute made it a
    sliding log (1.30x the ideal); one at the edge of the bucket as counted kept the guess,
    1.15x, to the end. Its pause is no shape's: the bucket learned, the factor probed down to
    what it charges, within 1.05x the ideal on every seed (seeds 1, 4, 5, 16 failed before:
    1.15x, 1.09x, 1.05x, 1.06x; the retry of a probe refused at random refused again, or a
    429 at the edge of the learned bucket as counted, kept the guess)."""
    if stray == "first probe":
        def refuse(now: float, n: int) -> bool:
            return n == 48  # (the opening burst: 47 of ours; answered at :42)
    else:
        rng = random.Random(int(stray.rsplit(" ", 1)[1]))

        def refuse(now: float, n: int) -> bool:
            return rng.random() < 0.05
    with virtual_wall_clock():
        wall, ideal, layer = await bucket_run(refuse, 240)
    stats = layer.statistics()
    assert stats.shape.startswith("bucket"), stats.shape
    assert wall <= 1.05 * ideal, (wall, ideal, stats.shape)
