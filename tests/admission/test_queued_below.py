"""Ours admitted but still queued below RateLimit (in ConcurrencyLimit, AdaptiveConcurrency) are
not at the server (``ratelimit/queued.py``): the readings of its headers leave them out of what
it counted, and a call leaving the queue goes before those still queued behind it."""

import asyncio
from collections import Counter
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.move import move
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import (FixedWindowServer, SlidingWindowServer, TokenBucketServer,
                              virtual_wall_clock)


def server_of(shape: str, latency: float) -> Any:
    """bench_composition's servers: 60 RPM, its TPM (the bucket's binds: 47 a minute), headers."""
    if shape == "bucket":
        return TokenBucketServer(rpm=60, tpm=10_000, latency=latency)
    kind = FixedWindowServer if shape == "fixed" else SlidingWindowServer
    return kind(rpm=60, tpm=40_000, latency=latency)


@pytest.mark.parametrize("shape", ["fixed", "sliding", "bucket"])
@pytest.mark.parametrize(("inner", "slots", "latency"), [("concurrency_limit", 8, 8.0),
                                                         ("adaptive_concurrency", 32, 2.0)])
async def test_calls_queued_below_are_not_read_as_seen_by_the_server(
        shape: str, inner: str, slots: int, latency: float) -> None:
    """The README stack with default RateLimit settings, ``ConcurrencyLimit(8)`` at 8 s a call
    or ``AdaptiveConcurrency(max=32)`` at 2 s, 10x the quota at once from :40 of a minute.
    RateLimit admits the minute's quota and most of it waits below; the first answer to one
    sent from that queue said 56 of 60 remained, read as if the 54 still queued had been
    counted: 54 more admitted, and each minute after the calls leaving the queue waited for
    room the newer ones held, holding the slots (8 or 32 sent a minute; 1.8x and 2.1x the
    ideal on the fixed window). Now: within 1.05x the soonest the quotas and the slots allow,
    no minute with only the slots' worth sent, at most 1% 429s."""
    with virtual_wall_clock():
        server = server_of(shape, latency)
        loop = asyncio.get_running_loop()
        await asyncio.sleep((40.0 - loop.time() % 60) % 60)
        question = {"model": "primary", "max_tokens": 200}
        charge = server.charge(messages=[{"role": "user", "content": "question number 100"}],
                               max_tokens=200)
        tpm = server.quotas["tokens"].limit if shape != "bucket" else 10_000
        calls = 10 * min(60, tpm // charge)
        pipeline = (lg.Pipeline(name="queued").metrics().cache(ttl=300)
                    .fallback({"model": "backup"}).retry(attempts=4, seed=0)
                    .circuit_breaker().timeout(30).rate_limit(rpm=60, tpm=tpm))
        pipeline = (pipeline.concurrency_limit(slots) if inner == "concurrency_limit"
                    else pipeline.adaptive_concurrency(max=slots))
        for layer in pipeline.layers:
            if isinstance(layer, lg.RateLimit):
                server.on_headers.append(layer.observe_headers)
        send = pipeline.wrap(server.acompletion)
        start = loop.time()
        await asyncio.gather(*(send(messages=[{"role": "user", "content": f"question number {i}"}],
                                    **question) for i in range(calls)))
        wall = loop.time() - start
    ideal = max(server.ideal_time(calls, tokens=charge, start=start),
                server.ideal_time(calls, tokens=charge, start=start, in_flight=slots))
    sent = Counter(int(a.at // 60) for a in server.arrivals)  # per clock minute
    assert wall <= 1.05 * ideal, (wall, ideal, sorted(sent.items()))
    assert server.statistics().rate_limited <= calls // 100
    inside = [sent[minute] for minute in range(min(sent) + 1, max(sent))]  # whole minutes
    assert min(inside) > slots, sorted(sent.items())


def test_a_reading_leaves_out_ours_still_queued_below() -> None:
    """60 admitted at :40, 3 sent at once, 57 queued below; at :42 three leave the queue
    (moved: taken anew, seq 60-62). The answer to seq 60 says 56 remain: the server counted
    4 of ours, and 2 more of ours are on the way, and the 54 still queued are too. Read as
    counted (the old bound: 56 less the 2), 54 new calls were admitted; now the reading
    leaves no room for a new call, but each queued one moving as it leaves the queue takes
    back the room the reading kept for it."""
    window = Window((Quota(600, 60.5, False, learn=True, margin=0.5),))
    entries = [window.take(40.0, 0) for _ in range(60)]
    for entry in entries[3:]:
        window.queued.mark(entry)
    moved = [move(window, 42.0, entry, 0) for entry in entries[3:6]]
    assert [e.seq for e in moved] == [60, 61, 62] and window.queued.requests == 54
    window.cap(44.0, False, 56, 16.0, moved[0])
    assert window.caps[False][0] == 0  # 56 - 2 on the way - 54 queued below
    assert window.take(44.0, 0) is None
    left = move(window, 46.0, entries[6], 0)  # the next one leaves the queue
    assert left is not None and window.caps[False][0] == 0
    assert window.queued.requests == 53 and not entries[6].queued


def test_a_call_leaving_the_queue_goes_before_ours_queued_behind_it() -> None:
    """RateLimit(rpm=3): A sent at 0, B and C queued below. At 61 the minute freed the three and
    the line admitted D, E and F, all queued behind B and C. B leaves the queue with no room:
    the newest queued (F) gives way, refunded, and B is counted from now; F takes room anew
    as its own call leaves the queue. Without it B held its slot until 120 while the newer
    claims held the room."""
    window = Window((Quota(3, 60.5, False, learn=False, margin=0.5),))
    a, b, c = (window.take(0.0, 0) for _ in range(3))
    for entry in (b, c):
        window.queued.mark(entry)
    d, e, f = (window.take(61.0, 0) for _ in range(3))
    for entry in (d, e, f):
        window.queued.mark(entry)
    sent = move(window, 61.5, b, 0)
    assert sent is not None and sent.time == 61.5
    assert not f.live and not f.queued and d.live and e.live
    assert list(window.queued.entries.values()) == [c, d, e]
    assert window.take(61.5, 0) is None  # still 3 in the window: B (sent), D and E


def provider() -> tuple[dict[str, float], Any]:
    """A provider taking 5 s a call, and when it saw each (by the call's name)."""
    seen: dict[str, float] = {}

    async def send(name: str) -> str:
        seen[name] = asyncio.get_running_loop().time()
        await asyncio.sleep(5.0)
        return name

    return seen, send


async def test_a_call_arriving_while_ours_wait_below_reserves_once_as_it_leaves() -> None:
    """The README stack under ``gather``: 40 calls at once through ``ConcurrencyLimit(4)``,
    each answered after 1 s. Four go at once, the fifth reserves and is queued below (its
    reservation marked); the 35 arriving after it, ours waiting below, reserve nothing until
    they leave that queue (``ratelimit/held.py``): 41 reservations in all (the fifth's moved
    once), where each queued call took one, had it marked, refunded and taken again (76)."""
    seen: list[float] = []
    loop = asyncio.get_running_loop()

    async def send(prompt: str) -> str:
        seen.append(loop.time())
        await asyncio.sleep(1.0)
        return prompt

    pipeline = (lg.Pipeline(name="deferred").metrics().cache(ttl=300).fallback(send)
                .retry(attempts=3).circuit_breaker().timeout(30)
                .rate_limit(rpm=1_000, tpm=1_000_000).concurrency_limit(4))
    rate_limit = next(layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit))
    guarded = pipeline.wrap(send)
    answers = await asyncio.gather(*(guarded(f"question {i}") for i in range(40)))
    assert answers == [f"question {i}" for i in range(40)]
    assert Counter(int(at) for at in seen) == {i: 4 for i in range(10)}
    window = rate_limit.backend._windows[None]
    assert window.issued == 41, window.issued
    assert rate_limit.statistics().in_flight == 0 and not window.queued.entries


@pytest.mark.parametrize("inner", ["concurrency_limit", "adaptive_concurrency"])
async def test_a_deferred_call_let_go_at_once_below_still_reserves_before_it_is_sent(
        inner: str) -> None:
    """One ``RateLimit(rpm=4)`` shared by two call sites, each with its own limit of one. A is
    sent through the first and B queued behind it (ours waiting below, the minute with room
    for both and one more): C, through the second, is not reserved as it arrives, and its
    limiter lets it go at once. It reserves before it is sent all the same: D and E, through
    the second too, find the minute with B, A, C and D, so E waits for the window to free
    (60.5 s with the margin). Unreserved, C let E go at 10.1 s: five in the minute."""
    seen, send = provider()
    rate_limit = lg.RateLimit(rpm=4, margin=0.5)
    first = lg.Pipeline(rate_limit, lg.ConcurrencyLimit(1)).wrap(send)
    below = lg.ConcurrencyLimit(1) if inner == "concurrency_limit" else lg.AdaptiveConcurrency(
        initial=1, max=1)
    second = lg.Pipeline(rate_limit, below).wrap(send)
    tasks = [asyncio.create_task(first("a")), asyncio.create_task(first("b"))]
    for name in "cde":
        await asyncio.sleep(0.1)
        tasks.append(asyncio.create_task(second(name)))
    assert await asyncio.gather(*tasks) == list("abcde")
    assert seen == pytest.approx({"a": 0.0, "c": 0.1, "b": 5.0, "d": 5.1, "e": 60.5}, abs=0.01)


async def test_calls_deferred_below_reserve_once_the_quota_might_not_hold_them() -> None:
    """``RateLimit(rpm=4)`` over ``ConcurrencyLimit(1)``, a call every 0.1 s, each 5 s at the
    provider. A is sent, B reserves and waits below; C finds room for B and itself and one more
    (``queued.roomy``), so it waits below unreserved. D finds no such room: C reserves first
    (marked queued below, as if admitted then), then D; E finds the minute full and waits in
    the line. The provider sees four in the minute, E at 60.5 s; left unreserved, C let E
    into the minute (five by 25 s)."""
    seen, send = provider()
    rate_limit = lg.RateLimit(rpm=4, margin=0.5)
    guarded = lg.Pipeline(rate_limit, lg.ConcurrencyLimit(1)).wrap(send)
    window = rate_limit.backend._windows  # type: ignore[attr-defined]
    tasks = []
    for name in "abcde":
        tasks.append(asyncio.create_task(guarded(name)))
        await asyncio.sleep(0.1)
        if name == "c":
            assert window[None].issued == 2  # A and B
        if name == "d":
            assert window[None].issued == 4 and window[None].queued.requests == 3
    assert await asyncio.gather(*tasks) == list("abcde")
    assert seen == pytest.approx({"a": 0.0, "b": 5.0, "c": 10.0, "d": 15.0, "e": 60.5},
                                 abs=0.01)


@pytest.mark.parametrize("ending", ["queue_full", "cancelled"])
async def test_a_call_deferred_below_that_never_leaves_the_queue_leaves_nothing(
        ending: str) -> None:
    """A call waiting below unreserved (``held.defer``) that is refused by the limiter below
    (its queue full) or cancelled there took nothing: nothing to refund, and RateLimit no
    longer counts it as waiting below (the next calls reserve as before once none do)."""
    rate_limit = lg.RateLimit(rpm=10, tpm=1000, tokens=lambda n: n, margin=0.5)
    inner = lg.ConcurrencyLimit(1, max_queue=1 if ending == "queue_full" else None)

    async def send(n: int) -> int:
        await asyncio.sleep(10.0)
        return n

    guarded = lg.guard(rate_limit, inner)(send)
    tasks = [asyncio.create_task(guarded(100)) for _ in range(3)]
    await asyncio.sleep(1.0)
    line = rate_limit._line  # type: ignore[attr-defined]
    if ending == "cancelled":
        assert line.waiting_below == 2 and len(line.deferred) == 1
        tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], lg.QueueFull if ending == "queue_full"
                      else asyncio.CancelledError)
    s = rate_limit.statistics()
    assert s.refunds == 0 and s.requests_available == 8 and s.in_flight == 0
    assert line.waiting_below == 0 and not line.deferred
