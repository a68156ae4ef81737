"""RedisBackend for RateLimit against the real Redis: the in-memory semantics, shared by processes.

These tests run on real time (the server clock is the quota's clock), so looptime is off and every
window and wait is sub-second and bounded.
"""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = (Quota(3, 0.3, False),)
TOKENS = (Quota(3, 0.3, False), Quota(100, 0.3, True))


async def test_reserve_admits_up_to_the_quota_then_says_how_long_to_wait(redis_url, redis_prefix):
    """Three requests fit a 3-per-0.3 s quota; the fourth gets a wait within the window, nothing
    recorded, and is admitted once that wait has passed."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    tickets = [await backend.reserve(None, REQUESTS, 0) for _ in range(3)]
    assert all(wait == 0.0 and ticket for wait, ticket in tickets)
    wait, ticket = await backend.reserve(None, REQUESTS, 0)
    assert ticket is None and 0.0 < wait <= 0.31
    await asyncio.sleep(wait)
    assert (await backend.reserve(None, REQUESTS, 0))[0] == 0.0
    await backend.aclose()


async def test_two_backends_share_one_quota(redis_url, redis_prefix):
    """Two backends (as two processes would) with the same prefix draw on one quota."""
    a, b = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0), RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    results = [await (a if i % 2 else b).reserve("key", REQUESTS, 0) for i in range(4)]
    assert [ticket is not None for _, ticket in results] == [True, True, True, False]
    assert (await a.reserve("other", REQUESTS, 0))[1] is not None  # keys are separate quotas
    await a.aclose()
    await b.aclose()


async def test_a_call_queued_below_is_counted_again_when_it_reaches_the_provider(redis_url, redis_prefix):
    """Regression (issue 18 finding 5, Redis): RateLimit(rps=2) over ConcurrencyLimit(1), calls
    of 0.6 s: calls admitted by the quota but queued for the slot are counted again when they
    leave the queue, waiting for room: the provider never sees more than 2 requests in any
    1 s window."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    arrivals: list[float] = []

    async def provider() -> str:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.6)
        return "ok"

    guarded = lg.Pipeline(lg.RateLimit(rps=2, backend=backend), lg.ConcurrencyLimit(1)).wrap(provider)
    assert await asyncio.gather(*(guarded() for _ in range(6))) == ["ok"] * 6
    for i, at in enumerate(arrivals):
        assert sum(at - 1.0 < other <= at for other in arrivals) <= 2, (i, arrivals)
    await backend.aclose()


@pytest.mark.parametrize("refill", ["window", "auto", "continuous"])
async def test_a_call_leaving_the_queue_below_takes_the_room_of_ours_queued_behind_it(
        redis_url, redis_prefix, monkeypatch, refill):
    """RateLimit(rps=3) over ConcurrencyLimit(1), 9 calls of 0.7 s (the slot, not the quota,
    binds): whenever room came back the line admitted calls that queued for the slot, so a
    call leaving that queue found the window full of their claims and waited ahead of the
    line holding the slot (3-4 times a run on main: the slot idle 2.2 s of 12.8 with 15
    calls; none in memory). Now the newest queued behind it give way (``ratelimit.below``):
    no call waits ahead of the line, and the provider still sees at most 3 in any 1 s."""
    from llmguard._admission.ratelimit import held

    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    arrivals: list[float] = []
    waited: list[object] = []
    wait = held.Held._wait
    monkeypatch.setattr(held.Held, "_wait", lambda self: waited.append(self) or wait(self))

    async def provider() -> str:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.7)
        return "ok"

    guarded = lg.Pipeline(lg.RateLimit(rps=3, refill=refill, backend=backend),
                          lg.ConcurrencyLimit(1)).wrap(provider)
    try:
        assert await asyncio.gather(*(guarded() for _ in range(9))) == ["ok"] * 9
    finally:
        await backend.aclose()
    assert not waited
    for i, at in enumerate(arrivals):
        assert sum(at - 1.0 < other <= at for other in arrivals) <= 3, (i, arrivals)


async def test_reconcile_and_refund_give_tokens_back(redis_url, redis_prefix):
    """A reservation reconciled down frees the difference; a refund frees it all (also the
    request); both are applied in the background and visible to the next reservation."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    _, first = await backend.reserve(None, TOKENS, 60)
    assert (await backend.reserve(None, TOKENS, 60))[1] is None  # 120 > 100 tokens
    backend.reconcile(None, first, 10)
    await backend.connection.aclose()  # waits for the background write
    _, second = await backend.reserve(None, TOKENS, 60)  # 70 <= 100
    assert second is not None
    assert (await backend.reserve(None, TOKENS, 60))[1] is None
    backend.refund(None, second)
    await backend.connection.aclose()
    assert (await backend.reserve(None, TOKENS, 60))[1] is not None
    assert backend.headroom(None, TOKENS)[1] == 30  # as of that reservation: 100 - 10 - 60
    await backend.aclose()


async def test_pause_is_shared_and_never_shortened(redis_url, redis_prefix):
    """A 429's pause written by one process stops admissions in another; a shorter pause later
    does not shorten it."""
    a, b = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0), RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    a.pause(None, REQUESTS, 0.4)
    a.pause(None, REQUESTS, 0.05)
    await a.aclose()
    wait, ticket = await b.reserve(None, REQUESTS, 0)
    assert ticket is None and 0.2 < wait <= 0.4
    await asyncio.sleep(wait)
    assert (await b.reserve(None, REQUESTS, 0))[1] is not None
    await b.aclose()


async def test_provider_cap_limits_admissions_until_reset(redis_url, redis_prefix):
    """x-ratelimit-remaining-requests=1 with a 0.2 s reset admits one request, then waits for the
    reset, even though the configured quota has room."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = (Quota(100, 1.0, False),)
    backend.cap(None, quotas, False, 1, 0.2)
    await backend.connection.aclose()
    assert (await backend.reserve(None, quotas, 0))[1] is not None
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and 0.0 < wait <= 0.21
    await backend.aclose()


async def test_ratelimit_layer_with_redis_backend_needs_no_other_change(redis_url, redis_prefix):
    """RateLimit(..., backend=RedisBackend(url)) admits, queues in the fair order in the process
    (priority, then tenants in turn, then first come), reconciles to usage and refunds refused
    calls; statistics() is back to baseline afterwards."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    limit = lg.RateLimit(rps=4, backend=backend)
    order = []

    async def fn(name, priority=0):
        order.append(name)
        return name

    async def tenant_of(call, call_next):  # as the gateway does: the tenant is the partition
        call.partition, call.priority = call.args[0][0], call.kwargs.get("priority", 0)
        return await call_next(call)

    guarded = lg.guard(tenant_of, limit)(fn)
    names = ["a0", "a1", "a2", "a3", "b0"]
    calls = [guarded(name) for name in names] + [guarded("b-high", priority=1)]
    assert await asyncio.gather(*calls) == [*names, "b-high"]
    assert order == ["b-high", "a0", "b0", "a1", "a2", "a3"]
    stats = limit.statistics()
    assert (stats.admitted, stats.in_flight, stats.waiting) == (6, 0, 0)
    await backend.aclose()



async def test_a_measured_margin_reaches_the_shared_windows(redis_url, redis_prefix):
    """The margin RateLimit measures (answers saying the server's own time) is a new tuple of
    quotas, each window as long as the server's plus it: Redis counts with it from then on,
    and admission goes on as before."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    limit = lg.RateLimit(rpm=3, backend=backend)
    assert limit.statistics().margin == 0.5

    async def answer():  # the answer's headers, read while its reservation is held
        limit.observe_headers({"openai-processing-ms": "0"})
        return "ok"

    guarded = lg.guard(limit)(answer)
    assert [await guarded() for _ in range(3)] == ["ok"] * 3
    stats = limit.statistics()
    assert stats.margin < 0.5 and stats.admitted == 3 and "measured" in repr(limit)
    assert limit.quotas[0].window == 60 + stats.margin
    wait, ticket = await backend.reserve(None, limit.quotas, 0)
    # the log's wait, or (answers saying nothing of the limits: ``_silent``) until the wall
    # clock's next minute, where one request may go as a probe of a clock-minute window
    minute = 60.0 - time.time() % 60.0
    assert ticket is None and wait <= 60 + stats.margin + 0.01
    assert 55 < wait or abs(wait - minute) < 1.0, (wait, minute)
    await backend.aclose()

WORKER = """
import asyncio, sys, llmguard as lg
from llmguard.backends.redis import RedisBackend

async def main(url, prefix):
    backend = RedisBackend(url, prefix=prefix, timeout=30.0)
    limit = lg.RateLimit(rpm=15, max_wait=5, backend=backend)  # generous: a loaded machine
    guarded = lg.guard(limit)(asyncio.sleep)
    results = await asyncio.gather(*(guarded(0) for _ in range(10)), return_exceptions=True)
    await backend.aclose()
    print(sum(r is None for r in results), sum(isinstance(r, lg.AdmissionTimeout) for r in results))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_processes_sharing_one_quota_never_exceed_it(redis_url, redis_prefix):
    """Three processes, 10 calls each, on one rpm=15 quota: exactly 15 calls are admitted in all
    (the whole quota, never more), the other 15 time out waiting; the log holds 15 admissions."""
    import redis

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_url, redis_prefix], env=env,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    counts = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert sum(admitted for admitted, _ in counts) == 15
    assert sum(timed_out for _, timed_out in counts) == 15
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{redis_prefix}:rl:{{}}:log") == 15
    client.close()


def test_construction_errors_name_the_argument():
    """Bad arguments fail at construction with a message naming them."""
    with pytest.raises(ValueError, match="on_error"):
        RedisBackend(on_error="ignore")
    with pytest.raises(ValueError, match="timeout"):
        RedisBackend(timeout=0)
    with pytest.raises(ValueError, match="url"):
        RedisBackend("localhost")
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(prefix="")


# --- bounded memory ---------------------------------------------------------------------------

SHORT = (Quota(5, 0.1, False),)


async def test_per_key_state_stays_bounded_with_thousands_of_keys(redis_url, redis_prefix):
    """3,000 keys pass through (100 new ones every 25 ms against a 0.1 s window): the backend
    caches state for at most about twice the keys active in the last window, never one entry
    per key ever seen, and every key's first call is still admitted."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    loop = asyncio.get_running_loop()
    answered: list[float] = []  # when each batch's replies were all in
    most = peak = 0
    for batch in range(30):
        results = await asyncio.gather(
            *(backend.reserve(f"user{batch}.{i}", SHORT, 0) for i in range(100)))
        assert all(ticket is not None for _, ticket in results)
        most = max(most, backend.tracked_keys)
        # Keys whose reservation can still be inside the window: this batch's, and those of the
        # batches answered in the last window (generously). Counted from when the replies came,
        # not when a batch went out, so a slow (loaded) machine widens the bound with the wait.
        horizon = loop.time() - 0.1 - 0.05
        answered.append(loop.time())
        peak = max(peak, 100 * sum(1 for t in answered if t >= horizon))
        await asyncio.sleep(0.025)
    assert most <= 2 * peak + 1 and most < 1_000
    assert backend._local.tracked_keys == 0  # the outage fallback saw nothing
    await backend.aclose()


async def test_swept_keys_keep_their_quota_pause_and_provider_caps(redis_url, redis_prefix):
    """Sweeping forgets only what is stale or can be rebuilt: a key at its quota stays at it, a
    key paused or capped by another process stays paused or capped (in admissions and in the
    headroom statistics report), and a key whose entry was dropped is written to the same Redis
    keys (a pause set after the sweep holds)."""
    a = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    b = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)  # another process
    long = (Quota(2, 30.0, False),)
    for _ in range(2):
        assert (await a.reserve("busy", long, 0))[1] is not None
    b.pause("paused", SHORT, 30.0)
    b.cap(None, SHORT, False, 1, 30.0)  # the provider says: 1 request left for 30 s
    await b.aclose()
    assert (await a.reserve("paused", SHORT, 0))[1] is None
    assert (await a.reserve(None, SHORT, 0))[1] is not None  # takes the last capped request
    assert a.headroom(None, SHORT)[0] == 0
    for i in range(300):
        await a.reserve(f"once{i}", SHORT, 0)
    await asyncio.sleep(0.15)  # every "once" key is stale now
    for i in range(300):  # new keys trigger sweeps
        await a.reserve(f"later{i}", SHORT, 0)
    assert a.tracked_keys < 450
    # Read before any new reservation of these keys: what was learnt then still applies.
    assert a.headroom(None, SHORT)[0] == 0  # the cap, not the quota's 5
    assert a.headroom("paused", SHORT)[2] > 25
    assert "once0" not in a._seen  # dropped...
    a.pause("once0", SHORT, 30.0)  # ...yet its key names are rebuilt
    await a.connection.aclose()  # waits for the background write
    assert (await a.reserve("once0", SHORT, 0))[1] is None
    wait, ticket = await a.reserve("busy", long, 0)
    assert ticket is None and wait > 25
    wait, ticket = await a.reserve("paused", SHORT, 0)
    assert ticket is None and wait > 25
    wait, ticket = await a.reserve(None, SHORT, 0)
    assert ticket is None and wait > 25
    await a.aclose()


async def test_headroom_reverts_to_the_full_quota_once_stale(redis_url, redis_prefix):
    """The headroom reported after a key's last reservation holds while that reservation is in
    the window; afterwards (nothing admitted since) it is the full quota, not the old figure."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    for _ in range(5):
        await backend.reserve("k", SHORT, 0)
    assert backend.headroom("k", SHORT) == (0, 0, 0.0)
    await asyncio.sleep(0.12)
    assert backend.headroom("k", SHORT) == (5, 0, 0.0)
    await backend.aclose()


async def test_keys_of_different_types_never_share_a_quota(redis_url, redis_prefix):
    """Issue 21 #6: the string ``"int=7"`` and the int ``7`` (and ``None`` and ``""``, ``1`` and
    ``"1"``) are different keys, each with its own quota in Redis."""
    from llmguard._admission.ratelimit.window import Quota
    from llmguard.backends.redis import RedisBackend

    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = (Quota(1, 60.0, False),)
    for key in (7, "int=7", None, "", 1, "1", "r:int=7", "s:x", ("s", "x")):
        wait, ticket = await backend.reserve(key, quotas, 0)
        assert ticket is not None, f"key {key!r} found its quota already used by another key"
    await backend.aclose()


# --- refill="continuous": one bucket per quota in Redis ------------------------------------

BUCKETS = (Quota(3, 0.3, False, True), Quota(100, 0.3, True, True))


async def test_buckets_are_shared_and_refill_continuously(redis_url, redis_prefix):
    """Continuous quotas in Redis: two backends draw on one bucket per quota; once it is empty
    the wait is the time to refill one request (0.1 s at 3 per 0.3 s), not to the end of a
    window, and the request is admitted after it."""
    a, b = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0), RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    results = [await (a if i % 2 else b).reserve("key", BUCKETS, 10) for i in range(4)]
    assert [ticket is not None for _, ticket in results] == [True, True, True, False]
    wait = results[-1][0]
    assert 0.0 < wait <= 0.1 + 0.002
    assert a.headroom("key", BUCKETS)[0] == 0
    await asyncio.sleep(wait)
    assert (await b.reserve("key", BUCKETS, 10))[1] is not None
    await a.aclose()
    await b.aclose()


async def test_bucket_refunds_are_bounded_like_in_memory(redis_url, redis_prefix):
    """A refund right after its reservation gives everything back; reconciling down gives back
    the difference; but a refund after the provider's bucket could have filled up gives nothing
    (the Lua script applies ``bucket.settle``): 10 tokens per second, 5 reserved, the bucket
    full again, all 10 taken, then the first refunded: still no room."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = (Quota(100, 60.0, True, True),)
    _, first = await backend.reserve(None, quotas, 60)
    assert (await backend.reserve(None, quotas, 60))[1] is None
    backend.refund(None, first)
    await backend.connection.aclose()  # waits for the background write
    _, second = await backend.reserve(None, quotas, 60)
    assert second is not None
    backend.reconcile(None, second, 20)
    await backend.connection.aclose()
    assert (await backend.reserve(None, quotas, 80))[1] is not None  # 100 - 20 left

    slow = (Quota(10, 1.0, True, True),)
    _, early = await backend.reserve("k", slow, 5)
    await asyncio.sleep(0.6)  # full again
    assert (await backend.reserve("k", slow, 10))[1] is not None
    backend.refund("k", early)
    await backend.connection.aclose()
    wait, ticket = await backend.reserve("k", slow, 5)
    assert ticket is None and wait > 0.0, "the refund put the bucket above the provider's"
    await backend.aclose()


async def test_headers_drain_the_shared_bucket(redis_url, redis_prefix):
    """``x-ratelimit-remaining-requests: 1`` drains the shared request bucket to one request:
    the next reservation is admitted, the one after waits for the refill (a tenth of a second
    at 10 per second), not for the header's reset."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = (Quota(10, 1.0, False, True),)
    backend.cap(None, quotas, False, 1, 30.0)
    await backend.connection.aclose()
    assert (await backend.reserve(None, quotas, 0))[1] is not None
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and 0.0 < wait <= 0.1 + 0.002
    await backend.aclose()


async def test_continuous_layer_over_redis_against_a_token_bucket_server(redis_url, redis_prefix):
    """RateLimit(rps=4, refill="continuous", backend=RedisBackend) against a token-bucket server
    of 4 per second, 12 calls at once, FIFO within the process: all succeed, no 429, every
    reservation settled (the buckets hold nothing outstanding afterwards). Real time: the
    admission (Redis's clock) and the arrival (the server's) are a round trip apart, which varies
    on a busy machine, so ``margin=0.1`` as the README advises over a network."""
    from llmguard.testing import TokenBucketServer

    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    server = TokenBucketServer(rpm=4, window=1.0, latency=0.01)
    limit = lg.RateLimit(rps=4, refill="continuous", margin=0.1, backend=backend)
    guarded = lg.guard(limit)(server.acompletion)
    results = await asyncio.gather(*(guarded(messages=[{"role": "user", "content": "hi"}])
                                     for _ in range(12)))
    assert len(results) == 12 and server.statistics().rate_limited == 0
    await backend.connection.aclose()
    state = await backend.connection.redis.hgetall(f"{redis_prefix}:rl:{{}}:state")
    await backend.aclose()
    assert float(state[b"o1"]) == 0.0, state
