"""429s the quota did not cause (a provider's own overload answered as 429, a storm of them,
a load balancer shedding load), in front of a fixed-window server that sends its headers: the
default RateLimit waits out the pause they ask and no longer. In virtual time."""

import asyncio
from typing import Any

import llmguard as lg
from llmguard._admission.ratelimit.auto import AutoTrack
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.queued import Queued
from llmguard._admission.ratelimit.refusal import queued
from llmguard._admission.ratelimit.shape import Shape
from llmguard._admission.ratelimit.window import Quota
from llmguard.testing import FixedWindowServer, ProviderError


def ask(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question number {i}"}], "max_tokens": 20}


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


async def run(refuse: Any, calls: int) -> tuple[FixedWindowServer, lg.RateLimit, float]:
    """``calls`` at once through Retry -> RateLimit(rpm=60) -> ConcurrencyLimit(32), 40 s into
    a minute, into a fixed window of 60 a minute behind ``Refusing(refuse)``."""
    server = FixedWindowServer(rpm=60, latency=2.0)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40 - loop.time()) % 60)
    layer = lg.RateLimit(rpm=60)
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), layer, lg.ConcurrencyLimit(32))(
        Refusing(server, refuse))
    start = loop.time()
    assert len(await asyncio.gather(*(guarded(**ask(i)) for i in range(calls)))) == calls
    return server, layer, loop.time() - start


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
