"""RedisBackend under the default ``refill="auto"``: the shape one process learns is shared, and
every process paces its reservations for the key like the server's own limiter.

Real Redis and real time (the server clock is the quota's clock): looptime is off. The
end-to-end tests run two RateLimit layers, each with its own RedisBackend (two processes as far
as sharing goes), behind the simulated servers of ``llmguard.testing`` with demand above the
quota and default settings, and bound the calls' waits with ``max_wait`` so that only pacing
like the provider completes them (a sliding log would wait a whole window); what they assert
is counts: calls done, 429s, and the most any server window saw.
"""

import asyncio

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.named import Named
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _learned_scripts
from llmguard.backends.redis._learning import POLL
from llmguard.testing import FixedWindowServer, TokenBucketServer
from llmguard.testing._shapes import SlidingWindowServer
from redis_processes import two_processes

pytestmark = pytest.mark.looptime(False)

#: 3 requests per 0.3 s server window, 0.01 s margin, shape to be learned.
LEARNED = (Quota(3, 0.31, False, learn=True, margin=0.01),)


async def run(calls, n):
    results = await asyncio.gather(*(calls[i % 2]() for i in range(n)), return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


async def close(layers):
    for layer in layers:
        await layer.backend.aclose()


async def test_two_processes_pace_like_a_token_bucket_once_learned(redis_url, redis_prefix):
    """Behind a token bucket of 600 a minute, 660 calls from two processes: the bucket is
    learned from the resets and shared, so the 60 beyond the burst go at the refill rate
    (6 s), not a window later (the sliding log's 60 s, past max_wait): no 429, none timed out."""
    server = TokenBucketServer(rpm=600, latency=0.05)
    layers, calls = two_processes(server, redis_url, redis_prefix, 600, max_wait=40.0)
    errors = await run(calls, 660)
    assert errors == []
    assert server.statistics().rate_limited == 0
    assert all(layer.statistics().shape.startswith("bucket") for layer in layers)
    await close(layers)


async def test_two_processes_pace_to_a_fixed_windows_boundary(redis_url, redis_prefix):
    """Behind a fixed window of 200 a minute whose boundary comes 15 s after the start, 400
    calls from two processes: the boundary is learned and shared, the second 200 go at the
    boundary (not a window after the first burst, past max_wait): no 429, no window of the
    server saw more than 200, and (nearly) none timed out. On a loaded machine the first 200
    reservations take seconds, and those within the margin of the boundary count in both
    windows (safe), so a few of the second 200 may wait for the boundary after: at most 2%."""
    now = asyncio.get_running_loop().time()
    server = FixedWindowServer(rpm=200, latency=0.05, epoch=now - 45.0)
    layers, calls = two_processes(server, redis_url, redis_prefix, 200, max_wait=40.0)
    errors = await run(calls, 400)
    assert all(isinstance(e, lg.AdmissionTimeout) for e in errors), {type(e) for e in errors}
    assert len(errors) <= 8
    stats = server.statistics()
    assert stats.rate_limited == 0 and stats.peak_window_requests <= 200
    assert all(layer.statistics().shape.startswith("fixed") for layer in layers)
    await close(layers)


async def test_two_processes_never_overrun_a_sliding_window(redis_url, redis_prefix):
    """Behind a sliding window of 200 a minute, 240 calls from two processes: whatever the
    readings of a burst suggest, the window holds 200 and the other 40 wait for it (here until
    max_wait): no 429, and the server never saw more than 200 within its window. Nearly all
    200 go: on a loaded machine a request of one process admitted after a reading of the other
    may reach the server before it, and that reading caps a few lower (never higher)."""
    server = SlidingWindowServer(rpm=200, latency=0.05)
    layers, calls = two_processes(server, redis_url, redis_prefix, 200, max_wait=5.0)
    errors = await run(calls, 240)
    assert all(isinstance(e, lg.AdmissionTimeout) for e in errors), {type(e) for e in errors}
    assert 40 <= len(errors) <= 50
    stats = server.statistics()
    assert stats.rate_limited == 0 and stats.peak_window_requests <= 200
    await close(layers)


async def publish(backend, kind, epoch_in="", limits="0"):
    """Record a learned shape for key None as a process would (``epoch_in``: seconds from now
    to a boundary of the fixed window)."""
    names = backend._key(None)
    await backend.connection.call(_learned_scripts.PUBLISH, [names[3], names[1]],
                                  [kind, epoch_in, limits, "test"], "test")


@pytest.mark.parametrize("kind", ["unknown", "bucket", "fixed"])
async def test_a_switch_of_shape_mid_run_admits_nothing_the_server_would_refuse(
        redis_url, redis_prefix, kind):
    """Three requests admitted while the shape is unknown fill the quota; a process then
    publishes a bucket (which saw the three: empty) or a fixed window whose current window
    holds them: the next reservation waits in either shape."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    for _ in range(3):
        assert (await backend.reserve(None, LEARNED, 0))[1] is not None
    if kind != "unknown":
        await publish(backend, kind, "-0.05" if kind == "fixed" else "")
    wait, ticket = await backend.reserve(None, LEARNED, 0)
    assert ticket is None and wait > 0.0
    await backend.aclose()


@pytest.mark.parametrize("kind", ["unknown", "bucket", "fixed"])
async def test_a_refund_gives_every_counter_back_in_every_shape(redis_url, redis_prefix, kind):
    """In each shape, a full quota with one reservation refunded admits one more at once: the
    refund gave back the log entry, the bucket's unit and the fixed window's count."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    if kind != "unknown":
        await publish(backend, kind, "-0.01" if kind == "fixed" else "")
    tickets = [(await backend.reserve(None, LEARNED, 0))[1] for _ in range(3)]
    assert all(t is not None for t in tickets)
    assert (await backend.reserve(None, LEARNED, 0))[1] is None
    backend.refund(None, tickets[1])
    await backend.connection.aclose()  # waits for the background write
    assert (await backend.reserve(None, LEARNED, 0))[1] is not None
    assert (await backend.reserve(None, LEARNED, 0))[1] is None
    await backend.aclose()


async def test_a_learned_limit_is_shared(redis_url, redis_prefix):
    """A process that learned the server admits 2, not 3, per window publishes it: another
    process's reservations stop at 2 in a fresh window."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    await publish(first, "sliding", "", "2")
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    admitted = [(await other.reserve(None, LEARNED, 0))[1] is not None for _ in range(3)]
    assert admitted == [True, True, False]
    assert other.limits(None, LEARNED) == (2, None)
    await first.aclose()
    await other.aclose()


async def test_cancelled_calls_leave_the_layer_and_the_shared_quota_consistent(
        redis_url, redis_prefix):
    """Under the default refill, a call cancelled while waiting for room and one cancelled
    at the provider (sent: it counted) leave nothing waiting or in flight, the call not
    cancelled completes, and the shared quota holds the two sent: another process finds no
    room."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    limit = lg.RateLimit(rpm=2, backend=backend)
    release = asyncio.Event()

    async def provider():
        await release.wait()
        return "ok"

    guarded = lg.Pipeline(limit).wrap(provider)
    first, second = asyncio.ensure_future(guarded()), asyncio.ensure_future(guarded())
    while limit.statistics().in_flight < 2:
        await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(guarded())
    while limit.statistics().waiting < 1:
        await asyncio.sleep(0.01)
    waiting.cancel()
    second.cancel()
    await asyncio.gather(waiting, second, return_exceptions=True)
    stats = limit.statistics()
    assert (stats.waiting, stats.in_flight) == (0, 1)
    release.set()
    assert await first == "ok"
    assert limit.statistics().in_flight == 0
    await backend.connection.aclose()  # the background writes have landed
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    assert (await other.reserve(None, limit.quotas, 0))[1] is None
    await other.aclose()
    await backend.aclose()


async def test_a_429_teaches_every_process_the_limit_all_of_them_used(redis_url, redis_prefix):
    """Two processes send 3 requests in a window of a quota of 3 and the third is refused
    (429): the server admits 2, counted over both processes' requests (neither alone saw 2),
    and the other process's reservations stop at 2 from then on."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    assert (await first.reserve(None, LEARNED, 0))[1] is not None
    assert (await other.reserve(None, LEARNED, 0))[1] is not None
    _, refused = await first.reserve(None, LEARNED, 0)
    first.refused(None, LEARNED, 0.001, ticket=refused)
    first.reconcile(None, refused, 0)  # sent: it stays counted
    await first.connection.aclose()  # the background writes have landed
    await asyncio.sleep(0.35)  # a fresh window
    admitted = [(await other.reserve(None, LEARNED, 0))[1] is not None for _ in range(3)]
    assert admitted == [True, True, False]
    assert other.limits(None, LEARNED) == (2, None)
    await first.aclose()
    await other.aclose()


@pytest.mark.parametrize("kind", ["unknown", "bucket"])
async def test_assume_spent_drains_the_shared_quota_for_every_process(
        redis_url, redis_prefix, kind):
    """``assume_spent()`` in one process (a run resumed after a kill) counts the quota used up
    for every process: another finds no room, and a bucket learned afterwards (which drops the
    caps read as a window) starts empty and refills from there, rather than full."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    layer = lg.RateLimit(rpm=3, backend=first)
    layer.quotas = LEARNED
    layer.assume_spent()
    await first.connection.aclose()  # the background write has landed
    if kind == "bucket":
        await publish(first, "bucket")
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    wait, ticket = await other.reserve(None, LEARNED, 0)
    assert ticket is None and wait > 0.0
    await asyncio.sleep(wait)
    assert (await other.reserve(None, LEARNED, 0))[1] is not None
    await first.aclose()
    await other.aclose()


async def test_a_429_naming_a_daily_quota_teaches_no_process_a_minute_limit(
        redis_url, redis_prefix):
    """The same refusal, its message naming a daily quota ("requests per day (RPD)"): no
    process learns a per-minute limit from it; the other still admits 3 in a fresh window."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    assert (await first.reserve(None, LEARNED, 0))[1] is not None
    assert (await other.reserve(None, LEARNED, 0))[1] is not None
    _, refused = await first.reserve(None, LEARNED, 0)
    first.refused(None, LEARNED, 0.001, ticket=refused, named=Named(False, minute=False))
    first.reconcile(None, refused, 0)
    await first.connection.aclose()  # the background writes have landed
    await asyncio.sleep(0.35)  # a fresh window
    admitted = [(await other.reserve(None, LEARNED, 0))[1] is not None for _ in range(3)]
    assert admitted == [True, True, True]
    assert other.limits(None, LEARNED) == (3, None)
    await first.aclose()
    await other.aclose()


@pytest.mark.parametrize("where", ["mine", "theirs"])
async def test_a_probe_held_by_a_full_log_waits_for_room_not_a_poll(redis_url, redis_prefix,
                                                                     where):
    """A supposed boundary's probe is due, but the log is full (this process's own, or only
    the shared one: another process filled it): the reservation's wait lasts until the log
    has room (at most the poll while a boundary is probed), not the 1 ms that made every
    waiting process spin round trips (``beyond.held``; ``_probe_scripts.PROBE``)."""
    quotas = (Quota(3, 2.05, False, learn=True, margin=0.05),)
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    filler = backend if where == "mine" else RedisBackend(redis_url, prefix=redis_prefix,
                                                          timeout=30.0)
    assert all([(await filler.reserve(None, quotas, 0))[1] is not None for _ in range(3)])
    window = backend._local.window(None, quotas)
    window.shape.suppose(asyncio.get_running_loop().time() - 0.5, "test")  # due: probe it
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and wait >= POLL - 0.01, wait
    await backend.aclose()
    if filler is not backend:
        await filler.aclose()


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_the_readings_that_teach_a_bucket_drain_it_in_redis_as_in_memory(
        redis_url, redis_prefix, where):
    """Two readings (5 left, reset 30 s; 4 left, reset 36 s: a bucket of 10 a minute refilling
    what is missing) teach a token bucket: the server's holds 4, so after a third request ours
    has 3, as in memory. Main had 7 in Redis: each reading landed before the shape's
    publication, set a cap as under a window, and the publication dropped the caps (right for
    those read under the window assumption): the bucket was never drained."""
    from llmguard._admission.ratelimit.backend import MemoryBackend

    quotas = (Quota(10, 60.5, False, learn=True, margin=0.5),)
    backend = MemoryBackend() if where == "memory" else RedisBackend(
        redis_url, prefix=redis_prefix, timeout=30.0)
    connection = getattr(backend, "connection", None)
    try:
        for remaining, reset in ((5, 30.0), (4, 36.0)):
            _, ticket = await backend.reserve(None, quotas, 0)
            backend.observe(None, quotas, False, remaining, reset, ticket=ticket)
            if connection is not None:  # the reading's write lands before the publication
                await connection.landed()
        assert backend.shape(None, quotas).startswith("bucket")
        assert (await backend.reserve(None, quotas, 0))[1] is not None
        assert backend.headroom(None, quotas)[0] == 3
    finally:
        if connection is not None:
            await backend.aclose()
