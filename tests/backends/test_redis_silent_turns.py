"""When a probe of a server that says nothing may go, for every process sharing a key in Redis
(``_probe_scripts.SILENT``, as ``silent.due`` in memory): the first one waited for through a
429's short pause, none beyond the bucket while the charge's probe is in flight.

Real Redis and real time (server time is the wall clock, whose minutes a silent server is
probed at): the state each test sets in the shared hashes stands for what the other processes
did; what is asserted is what one reservation is told.
"""

import asyncio

import pytest

from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)


async def test_the_first_probe_is_waited_for_through_a_pause(redis_url, redis_prefix):
    """The sliding log full, a 429's short pause still running (the charge probe's, a bare
    429's): a reservation waits for the clock minute, where the first probe may go for every
    process, not for the log (main: the pause left the log's wait, and a process whose callers
    asked 0.04 s before the pause ended slept 9 s into the minute the probe opened, 1.52x)."""
    import redis

    quotas = (Quota(30, 60.05, False, learn=True, margin=0.05),)
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    names, client = backend._key(None), redis.Redis.from_url(redis_url)
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    if not 1.0 < now % 60.0 < 57.0:  # (the log's end well after the next minute)
        await asyncio.sleep((61.0 - now % 60.0) % 60.0)
    for _ in range(30):  # the log full for a minute
        assert (await backend.reserve(None, quotas, 0))[1] is not None
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    client.hset(names[3], "sq", "1")  # a server that says nothing
    client.hset(names[1], "pause", repr(now + 0.5))
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None
    assert 0.4 < wait < 60.0 - now % 60.0 + 1.0  # (main: the log's, 60 s)
    client.close()
    await backend.aclose()


async def within_both(redis_url, prefix, before, used):
    """A key paced within both, the charge's probe refused (``ck``: the factor, 1.15x, kept,
    still a guess): four requests of 200 tokens (920 of the token bucket's 1,000 as we count
    them) reserved ``before`` s before a clock minute (12 s) and answered (``used``), then
    0.05 s into the minute, the first probe served there (``ss``): (backend, quotas, a client
    of the server, the shape HASH's key)."""
    import redis

    quotas = (Quota(100, 12.05, False, learn=True, margin=0.05),
              Quota(1_000, 12.05, True, learn=True, margin=0.05))
    backend = RedisBackend(redis_url, prefix=prefix, timeout=30.0)
    shape = backend._key(None)[3]
    client = redis.Redis.from_url(redis_url)
    client.hset(shape, mapping={"sq": "1", "noreset": "1", "ck": "1", "cl": "1.15",
                                "charge": "1.1500,kept"})
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    await asyncio.sleep((12.0 - before - now % 12.0) % 12.0)
    for _ in range(4):
        _, ticket = await backend.reserve(None, quotas, 200)
        backend.reconcile(None, ticket, used)
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    await asyncio.sleep(12.0 - now % 12.0 + 0.05)
    client.hset(shape, "ss", repr(now - now % 12.0 + 12.0))
    return backend, quotas, client, shape


async def test_no_probe_beyond_the_bucket_while_the_charges_is_in_flight(redis_url, redis_prefix):
    """Paced within both, the bucket dry as we count ours and the minute roomy: the probe
    beyond the bucket waits for the answer of the charge's probe in flight (another process's,
    ``cp``), as ``silent.due`` does in memory (that answer may bracket the factor, and then
    none goes); main sent it beside the charge's, the bucket a unit deeper (strict fixed
    window, ``bench_distributed``: each minute's burst a refill late, 1.52x vs 1.46x)."""
    backend, quotas, client, shape = await within_both(redis_url, redis_prefix, 0.5, 200)
    client.hset(shape, "cp", f"{client.time()[0]},other~200")  # the charge's probe, in flight
    _, ticket = await backend.reserve(None, quotas, 200)
    assert ticket is None, ticket.silent  # (main: 4, the probe beyond the bucket)
    client.hdel(shape, "cp")  # answered (its answer left the factor as it was): it goes
    _, ticket = await backend.reserve(None, quotas, 200)
    assert ticket.silent == 4
    backend.refund(None, ticket)
    client.close()
    await backend.aclose()


async def test_paced_within_both_ours_count_at_most_at_what_the_probes_allow(
        redis_url, redis_prefix):
    """Paced within both (the first probe served at the minute ``ss``), the token bucket counts
    every process's requests at most at the factor the probes served allow (``rp``), as memory's
    ``holds.surely`` does (``carry.charged``): ours reserved at 1.15x (230 tokens for 200) a
    second before the minute, 920 of 1,000, leave a bucket charging at most 1.0x room for one
    more at the minute (main counted them as reserved: dry, the next went as the probe beyond
    the bucket, and every minute's burst came a refill late: 1.52x where memory ran 1.46x)."""
    backend, quotas, client, shape = await within_both(redis_url, redis_prefix, 1.0, 230)
    client.hset(shape, "rp", "1.0")  # a bucket charging at most our bare estimates
    _, ticket = await backend.reserve(None, quotas, 200)  # (the bucket refilled ~90 since)
    assert ticket is not None and ticket.silent == 0  # (main: 4, the probe beyond the bucket)
    backend.refund(None, ticket)
    client.close()
    await backend.aclose()
