"""429s the quota did not cause (a provider's own overload answered as 429, a storm of them,
a load balancer shedding load), in front of a fixed-window server or a token bucket that send
their headers: the default RateLimit waits out the pause they ask and no longer, and learns
neither a lower limit nor a shape from them. In virtual time."""

import asyncio
from types import SimpleNamespace
from typing import Any

import llmguard as lg
from llmguard._admission.ratelimit.auto import AutoTrack
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.queued import Queued
from llmguard._admission.ratelimit.refusal import queued
from llmguard._admission.ratelimit.shape import Shape
from llmguard._admission.ratelimit.repeat import limit, read
from llmguard._admission.ratelimit.window import Quota
from llmguard.testing import FixedWindowServer, ProviderError, TokenBucketServer


def ask(i: int, max_tokens: int = 20) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question number {i}"}],
            "max_tokens": max_tokens}


class Refusing:
    """``server.acompletion`` behind a 429 (``retry-after`` only, back in 50 ms) to every
    request arriving while ``refuse(now, n)`` says so (``n``: the arrival's number); the server
    never sees those."""

    def __init__(self, server: FixedWindowServer, refuse: Any) -> None:
        self.server, self.refuse, self.arrivals = server, refuse, 0

    async def __call__(self, **kwargs: Any) -> Any:
        now = asyncio.get_running_loop().time()
        self.arrivals += 1
        pause = self.refuse(now, self.arrivals)
        if pause:
            await asyncio.sleep(0.05)
            raise ProviderError("Rate limit reached", status_code=429,
                                headers={"retry-after": f"{pause:g}"})
        return await self.server.acompletion(**kwargs)


async def run(refuse: Any, calls: int, server: Any = None, max_tokens: int = 20,
              **quotas: int) -> tuple[Any, lg.RateLimit, float]:
    """``calls`` at once (``ask(i, max_tokens)``) through Retry -> RateLimit(**quotas) ->
    ConcurrencyLimit(32), 40 s into a minute, into ``server`` (a fixed window of 60 a minute)
    behind ``Refusing(refuse)``."""
    server = server or FixedWindowServer(rpm=60, latency=2.0)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40 - loop.time()) % 60)
    layer = lg.RateLimit(**(quotas or {"rpm": 60}))
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), layer, lg.ConcurrencyLimit(32))(
        Refusing(server, refuse))
    start = loop.time()
    assert len(await asyncio.gather(*(guarded(**ask(i, max_tokens))
                                      for i in range(calls)))) == calls
    return server, layer, loop.time() - start


def in_each_minute(*places: int) -> Any:
    """A ``refuse`` asking 2 s of the arrivals at ``places`` (1 the first) of each clock
    minute after the first: a busy server's 429s, at the tail of each minute's burst."""
    seen: dict[int, int] = {}

    def refuse(now: float, n: int) -> float:
        minute = int(now // 60)
        seen[minute] = seen.get(minute, 0) + 1
        return 2.0 if minute > 0 and seen[minute] in places else 0.0

    return refuse


async def test_a_429_to_the_third_of_a_minutes_burst_is_not_the_minutes_limit() -> None:
    """One 429 asking 2 s, to the 63rd arrival (the third of the second minute's burst): ours
    the server had seen in that minute before it were 2, not the 59 admitted with it at the
    same instant, so no lower limit is learned and the minute is not held as full (it was: the
    limit read as 59, the rest of the minute idle). 180 calls take their three minutes."""
    server, layer, wall = await run(lambda now, n: 2 if n == 63 else 0, 180)
    assert layer.statistics().requests_limit == 60, layer.statistics().shape
    assert wall <= server.ideal_time(180) + 3  # the refused one's pause and its answer


async def test_a_storm_of_429s_leaves_the_rest_of_its_minute_to_use() -> None:
    """Every request in [120, 135) refused, asking for the rest of that: the 32 the storm
    refused were never counted by the server (its headers say so once answers come), so the
    minute's other 28 go at 135 instead of waiting for the next minute (ours counted them:
    the minute was held full while the server said 28 remained)."""
    server, _, _ = await run(lambda now, n: 135 - now if 120 <= now < 135 else 0, 180)
    served = [a.at for a in server.arrivals if a.status == 200]
    assert sum(135 <= t < 180 for t in served) >= 27


def test_ours_still_queued_below_are_not_counted_as_seen_by_the_server() -> None:
    """RateLimit admits the quota at once and ConcurrencyLimit(32) below holds all but 32
    (marked queued: :mod:`.queued`): a random 429 to one sent from that queue counts what the
    server saw before it without the reservations still queued. Counted, it read "the server
    admits 568" with 129 sent, and the calls holding the inner slots waited 28 s for room
    those queued reservations held."""
    track = AutoTrack(Quota(600, 60.5, False, learn=True, margin=0.5), Shape.of(
        [Quota(600, 60.5, False, learn=True, margin=0.5)]))
    below = Queued()
    entries = [Entry(0.0, 1, None, seq) for seq in range(600)]
    for entry in entries:
        track.add(0.0, entry)
    for entry in entries[32:]:  # the first 32 went at once; the rest wait below
        below.mark(entry)
    for entry in entries[:20]:  # 20 of those answered
        entry.answered = 2.0
    ticket = Entry(2.0, 1, None, 600)  # the 33rd, sent from the queue as a slot came free
    below.unmark(entries[32])
    entries[32].live = 0  # (moved: refunded, taken anew as the ticket)
    track.add(2.0, ticket)
    assert queued(track, ticket) == 600 - 33  # the 12 sent at once and in flight are sent
    direct = entries[25]  # a refusal of one that went at once: none before it queued
    assert queued(track, direct) == 0


async def test_a_429_at_the_tail_of_a_minutes_burst_leaves_the_minute_to_use() -> None:
    """The 58th to arrive in each minute refused asking 2 s (57 of ours seen before it, near
    the limit), and its retry refused again at the 61st while the server's answers said one
    remained: neither is the minute's limit (the pause ends long before the boundary). Each
    minute serves its 60, the refused one's retry 2 s later, so the provider is never idle
    past the pause asked. Read as the limit, every later minute admitted 57: the last 3
    slots idle with room, 56 s a minute, 1.12x the ideal."""
    server, layer, wall = await run(in_each_minute(58, 61), 180)
    assert layer.statistics().requests_limit == 60, layer.statistics().shape
    served = [a.at for a in server.arrivals if a.status == 200]
    assert [sum(m * 60 <= t < m * 60 + 60 for t in served) for m in (1, 2)] == [60, 60]
    assert wall < 90  # the minute at 120 the last (Retry's backoff after the second 429 aside)


async def test_an_early_foreign_429_does_not_make_a_token_bucket_a_clock_minute() -> None:
    """A token bucket (OpenAI's accounting, its headers with resets) behind a 429 asking 2 s
    to the 3rd request, before any answer: a reset-less 429 supposes a clock minute, but the
    answers' resets (a bucket's: the time to refill what is missing) say what it is. Kept,
    the supposed minute was "confirmed" by the requests' remaining (high: the tokens bind)
    and the bucket paced as a fixed window: 43 of its own 429s in 150 calls."""
    server = TokenBucketServer(rpm=60, tpm=10_000, latency=2.0)
    _, layer, _ = await run(lambda now, n: 2.0 if n == 3 else 0.0, 150, server, 200,
                            rpm=60, tpm=10_000)  # (200 tokens each: the tokens bind)
    assert layer.statistics().shape.startswith("bucket"), layer.statistics().shape
    assert server.statistics().rate_limited <= 150 // 100, server.statistics()


def test_a_lower_limit_with_a_short_pause_is_learned_once_a_second_429_confirms_it() -> None:
    """On a learned fixed window, a 429 after 59 of ours asking 2 s (its boundary 58 s away)
    only suspects "the server admits 59"; the retry, sent after it was heard and refused at
    the same place, confirms it, unless the server's latest reading in the minute left room
    for it (a random 429 refused it twice). A pause reaching the boundary, or none asked (a
    bare 429), is the window's own: learned at once."""
    quota = Quota(60, 60.05, False, learn=True, margin=0.05)
    shape = Shape.of([quota])
    shape.learn("fixed", "a reset pointed to the minute", 0.0)
    shape.quiet = False  # (its answers tell their counts)
    window = SimpleNamespace(shape=shape)

    def confirms(track: AutoTrack, ticket: Entry, heard: float, until: float,
                 bare: bool = False) -> bool:
        return limit(window, track, heard, ticket, 59, (until, bare), sure=False)

    track = AutoTrack(quota, shape)
    first, retry = Entry(60.0, 1, None, 59), Entry(62.1, 1, None, 61)
    assert not confirms(track, first, 60.05, 62.05)
    assert confirms(track, retry, 62.15, 64.15)

    track = AutoTrack(quota, shape)
    answered = Entry(60.0, 1, None, 58)  # answered "1 remaining" after the refusal
    assert not confirms(track, first, 60.05, 62.05)
    read(window, [track], answered, 60.0, 1)
    assert not confirms(track, retry, 62.15, 64.15)

    assert confirms(AutoTrack(quota, shape), first, 60.05, 120.0)  # to the boundary
    assert confirms(AutoTrack(quota, shape), first, 60.05, 61.05, bare=True)


def test_a_429_a_token_buckets_last_reading_left_room_for_teaches_no_lower_limit() -> None:
    """A learned bucket said 100 tokens remained as it counted one of ours at 10 s; 3 s later
    (150 refilled at 3,000 a minute) one of 212 after it is refused: the bucket held 250, so
    the 429 was not its quota's and "the server admits" nothing lower. Read as a limit, an
    overloaded server's random 429s took a 10,000-token bucket to 9,103 in two minutes."""
    quota = Quota(3000, 60.05, True, learn=True, margin=0.05)
    shape = Shape.of([quota])
    shape.learn("bucket", "a reset read as a refill")
    shape.quiet = False
    window = SimpleNamespace(shape=shape)
    track = AutoTrack(quota, shape)
    read(window, [track], Entry(10.0, 212, None, 7), 10.0, 100)
    refused = Entry(13.0, 212, None, 8)
    assert not limit(window, track, 13.05, refused, 2800, (15.05, False), sure=False)
    read(window, [track], Entry(13.0, 212, None, 8), 13.0, 0)  # it held nothing more
    assert limit(window, track, 13.05, Entry(13.01, 212, None, 9), 2800, (15.05, False),
                 sure=False)


async def test_a_headerless_window_admitting_less_with_a_short_pause_is_still_learned() -> None:
    """A fixed window that sends no rate-limit header admits 58 a minute and asks 2 s of the
    rest: while the shape is unknown its 429s teach it and the limit (suspected as a learned
    fixed window's are, it was never learned: 10 429s in 300 calls, 40 s longer). From a
    server that says nothing a lower limit is doubted until a second 429 at the same count
    confirms it (:mod:`.repeat`: a stray 429 under a saturated pace comes near the limit too),
    so learning it costs one 429 more."""
    seen: dict[int, int] = {}

    def admits_58(now: float, n: int) -> float:
        minute = int(now // 60)
        if seen.get(minute, 0) >= 58:
            return 2.0
        seen[minute] = seen.get(minute, 0) + 1
        return 0.0

    server = FixedWindowServer(rpm=60, latency=2.0, rate_limit_headers=False)
    _, layer, _ = await run(admits_58, 300, server)
    stats = layer.statistics()
    assert stats.requests_limit == 58 and stats.shape.startswith("fixed"), stats.shape
    assert stats.rate_limited <= 4
