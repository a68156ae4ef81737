"""429s the quota did not cause (a provider's own overload, 5 % of requests asking 2 s) from a
server that says nothing (no rate-limit header; its 429s carry a Retry-After): the pause is
honoured, and what such a 429 would teach (a lower limit, "not a fixed window", a charge
factor) is only learned once a second 429 at the same count confirms it (:mod:`.doubt`).
The README stack with default settings, in virtual time."""

import asyncio
from typing import Any

import llmguard as lg
from llmguard._admission.ratelimit import doubt
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import FixedWindowServer, ProviderError, virtual_wall_clock

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
    assert doubt.served_beyond(w, track, 9, first.seq)
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


async def test_stray_429s_leave_a_silent_fixed_window_its_limit_and_its_minutes() -> None:
    """A headerless fixed clock-minute window of 60 a minute, one arrival in 20 refused
    asking 2 s (three in the opening burst at :40, none while the probes learn the minute
    from :55 to :130): 300 calls take their five minutes and the pauses asked (1.02x). Read
    at their word, the opening burst's refused ones, counted, held the log full until :42 of
    the next minute with no probe at :00 (56 s idle with room), and later ones lowered the
    limit to 56 (1.31x)."""
    with virtual_wall_clock():
        server = FixedWindowServer(rpm=60, latency=2.0, rate_limit_headers=False)
        wall, ideal, layer = await run(
            server, lambda now, n: n % 20 == 7 and not 55 < now < 130, 300)
    stats = layer.statistics()
    assert server.statistics().rate_limited == 0  # (the injected ones never reach it)
    assert stats.requests_limit == 60, stats.shape
    assert stats.shape.startswith("fixed"), stats.shape
    assert wall <= 1.05 * ideal, (wall, ideal, stats.shape)
