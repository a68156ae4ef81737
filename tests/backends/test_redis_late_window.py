"""RedisBackend under ``refill="auto"`` against a fixed window the server counts late (LiteLLM's
proxy under load counts a request when a worker takes it from its queue): ours in flight at a
boundary count in the new window too (``fixed.FixedCount``), whichever process sent them.

Real Redis and real time (the server clock is the quota's clock): looptime is off. Windows are
a second or less and what is asserted is counts (admissions, 429s), never timings.
"""

import asyncio

import pytest

from llmguard._admission.ratelimit import fixed
from llmguard._admission.ratelimit.window import Quota
from llmguard._core import clock
from llmguard.backends.redis import RedisBackend, _learned_scripts
from llmguard.testing import ProxyWindowServer, RateLimited
from redis_processes import two_processes

pytestmark = pytest.mark.looptime(False)


async def publish(backend, epoch_in, limits, late, doubt="", key=None):
    """Record, for ``key``, a fixed window with a boundary ``epoch_in`` s from now, as the
    process that learned it would (``late``: it counts a request late; ``doubt``: the server's
    boundary up to that many seconds after it, '' unknown)."""
    names = backend._key(key)
    await backend.connection.call(
        _learned_scripts.PUBLISH, [names[3], names[1]],
        ["fixed", repr(epoch_in), limits, "test", "1" if late else "", "", doubt], "test")


async def admitted(backend, quotas, n):
    """How many of ``n`` reservations for key None are admitted now."""
    return sum([(await backend.reserve(None, quotas, 0))[1] is not None for _ in range(n)])


async def before_a_boundary(backend, limit, n, late=True):
    """A fixed window of ``limit`` per 2 s (counted ``late`` or not) published with its
    boundary 1 s ahead, and ``n`` reservations for key None admitted before it: the quotas,
    the tickets, and a coroutine function that sleeps until 0.2 s past the boundary."""
    quotas = (Quota(limit, 2.05, False, learn=True, margin=0.05),)
    await publish(backend, 1.0, "0", late)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tickets = [(await backend.reserve(None, quotas, 0))[1] for _ in range(n)]
    assert all(ticket is not None for ticket in tickets)

    async def past_it():
        await asyncio.sleep(max(0.0, start + 1.2 - loop.time()))

    return quotas, tickets, past_it


@pytest.mark.parametrize("late", [True, False])
async def test_ours_in_flight_at_a_boundary_count_in_the_next_window_for_every_process(
        redis_url, redis_prefix, late):
    """A fixed window of 3 per 2 s with a boundary 1 s ahead: one process admits 2 before it,
    one of them answered (settled, its headers saying ``remaining`` without a reset, as
    LiteLLM's proxy's do) before the boundary, the other still in flight after it.
    Counted late, the in-flight one may be counted by the server in the new window, so another
    process is admitted 2 there, not 3; counted at arrival (``late`` False), 3."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas, tickets, past_it = await before_a_boundary(first, 3, 2, late)
    first.observe(None, quotas, False, 1, None, ticket=tickets[0])  # remaining, no reset
    first.reconcile(None, tickets[0], 0)  # answered: its settlement records when it ended
    await first.connection.aclose()  # the background settlement has landed
    await past_it()
    assert await admitted(other, quotas, 3) == (2 if late else 3)
    first.reconcile(None, tickets[1], 0)  # answered after the boundary: it stays carried
    await first.connection.aclose()
    assert await admitted(other, quotas, 1) == 0
    await first.aclose()
    await other.aclose()


async def test_a_refused_or_refunded_request_is_not_carried(redis_url, redis_prefix):
    """Of three admitted before the boundary and still open after it, one refunded (never
    sent) and one refused (429: the server counted none of it) are not carried: only the
    third counts in the new window (of 10: 9 admitted there)."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas, tickets, past_it = await before_a_boundary(backend, 10, 3)
    backend.observe(None, quotas, False, 7, None, ticket=tickets[2])  # remaining, no reset
    backend.refund(None, tickets[0])
    backend.refused(None, quotas, 0.001, ticket=tickets[1])
    await backend.connection.aclose()
    await past_it()
    assert await admitted(backend, quotas, 10) == 9
    await backend.aclose()


async def test_a_carried_request_refunded_after_the_boundary_gives_its_unit_back(
        redis_url, redis_prefix):
    """Two admitted before the boundary and in flight across it are carried into the new
    window (one unit of 3 left there); one of them is then refunded (it never left: queued
    for a concurrency slot across the boundary, say), which gives its unit back there too,
    while the other, answered after the boundary, stays counted (``FixedCount.adjust``)."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas, tickets, past_it = await before_a_boundary(backend, 3, 2)
    backend.observe(None, quotas, False, 1, None, ticket=tickets[0])  # remaining, no reset
    await backend.connection.aclose()
    await past_it()
    assert await admitted(backend, quotas, 2) == 1
    backend.refund(None, tickets[1])
    backend.reconcile(None, tickets[0], 0)
    await backend.connection.aclose()
    assert await admitted(backend, quotas, 2) == 1
    await backend.aclose()


async def test_two_processes_before_a_queueing_proxy_get_no_tail_refused(
        redis_url, redis_prefix):
    """LiteLLM's proxy under load, a window of a second: 10 requests a window (``rpm - 1``),
    one worker taking 0.08 s each and counting a request when it takes it, headers counting
    answers. Two processes share the learned clock window and its limit, and send 40 calls
    from the middle of a window: each window's burst is counted partly in the next one, so
    pacing to the window alone sends a full burst on top of that backlog and the tail is
    refused; with ours in flight at each boundary carried into it, at most one 429."""
    server = ProxyWindowServer(rpm=11, window=1.0, latency=0.08, workers=1, reports="answered",
                               overload_at=10**9)
    layers, calls = two_processes(server, redis_url, redis_prefix, 11)
    for layer in layers:  # the proxy's second-long window (its minute compressed)
        layer.quotas = (Quota(11, 1.05, False, learn=True, margin=0.05),)
    await asyncio.sleep((0.5 - clock.wall()) % 1.0)  # half way into a window of the proxy
    await publish(layers[0].backend, -(clock.wall() % 1.0), "10", True)
    results = await asyncio.gather(*(calls[i % 2]() for i in range(40)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, RateLimited) for e in errors), errors
    assert server.statistics().rate_limited <= 1, server.statistics()
    assert all(layer.statistics().shape.startswith("fixed") for layer in layers)
    for layer in layers:
        await layer.backend.aclose()


@pytest.mark.parametrize("late", [True, False])
async def test_a_clock_boundary_waits_only_the_clocks_skew_past_it(redis_url, redis_prefix, late):
    """A full fixed window of 4 s (margin 2 s) waits for the next one: on the wall clock's
    minute (``late``: learned from a server that never pointed to it) only the clocks' skew
    past its boundary, as ``fixed.FixedCount`` in memory; a boundary read from a reset the
    margin past it (an admission that late may be counted before it). Measured as the wait
    Redis asks for, against the boundary published: round trips far under the margin."""
    quotas = (Quota(3, 6.0, False, learn=True, margin=2.0),)
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    loop = asyncio.get_running_loop()
    boundary = loop.time() + 3.0
    await publish(backend, boundary - loop.time(), "0", late)
    assert await admitted(backend, quotas, 3) == 3
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None
    past = wait - (boundary - loop.time())  # how far past the boundary it may go
    early = fixed.skew(2.0, 4.0, True)
    assert (abs(past - early) < 0.5) if late else (abs(past - 2.0) < 0.5), past
    await backend.aclose()


async def test_answers_read_before_the_first_reading_up_after_a_boundary_are_not_carried(
        redis_url, redis_prefix):
    """A late fixed window of 10 per 2 s, its boundary 1 s ahead: one process admits 6 before
    it, still in flight there (carried into the new window: another process finds 4 of 10).
    After the boundary 3 are answered, then a reading shows ``remaining`` back up (the server
    counting afresh): those 3 were answered before it, made and counted before the boundary
    (``FixedCount.read``/``flipped``), so they are carried no more: 6 more fit, not 3."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas, tickets, past_it = await before_a_boundary(first, 10, 6)
    first.observe(None, quotas, False, 4, None, ticket=tickets[5])  # remaining, no reset
    await first.connection.aclose()
    await past_it()
    for ticket in tickets[:3]:
        first.reconcile(None, ticket, 0)  # answered after the boundary: still carried
    await first.connection.aclose()
    assert await admitted(other, quotas, 1) == 1  # 6 carried, 1 admitted: 3 left
    first.observe(None, quotas, False, 9, None, ticket=tickets[3])  # up: a new window's
    await first.connection.aclose()
    assert await admitted(other, quotas, 10) == 6
    await first.aclose()
    await other.aclose()


async def test_a_boundarys_doubt_is_shared_and_paces_every_process(redis_url, redis_prefix):
    """A fixed window of 2 per 20 s learned from a reset read on a slow way there: the
    server's boundary may lie up to 8 s after the one learned (``shape.Shape.doubt``). Shared
    with the boundary, it is adopted by another process's mirror, and Redis counts an
    admission within it after the boundary in the window before too: 2 admitted before the
    boundary, nothing is admitted a second after it (the window before is full), where a
    boundary shared without its doubt (paced by the margin, 0.05 s) admits there at once."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = (Quota(2, 20.05, False, learn=True, margin=0.05),)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for key, doubt in (("doubted", "8.0"), ("exact", "")):
        await publish(backend, 1.0, "0", False, doubt, key)
        assert [(await backend.reserve(key, quotas, 0))[1] is not None
                for _ in range(2)] == [True, True]
    await asyncio.sleep(max(0.0, start + 2.0 - loop.time()))  # past the boundary (well in 8 s)
    wait, ticket = await other.reserve("doubted", quotas, 0)
    assert ticket is None and wait > 0.0
    assert other._local.window("doubted", quotas).shape.doubt == 8.0
    assert (await other.reserve("exact", quotas, 0))[1] is not None
    assert other._local.window("exact", quotas).shape.doubt is None
    await backend.aclose()
    await other.aclose()
