"""RedisBackend under ``refill="auto"``: a fixed clock minute learned from a server that says
nothing is refuted by a 429 only as every process's requests show it (``learn_refusal._admits``
on the shared log), not as one process's share of them.

Real Redis and real time; the learned shape is written in the key's shape hash directly (as
a verdict would), and a 429 is read as the layer reads it."""

import asyncio

import pytest

from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

#: 6 requests a 10 s window and tokens that never bind; shape to be learned.
QUOTAS = (Quota(6, 10.05, False, learn=True, margin=0.05),
          Quota(100_000, 10.05, True, learn=True, margin=0.05))


@pytest.mark.parametrize("theirs", [4, 0])
async def test_a_429_refutes_a_silent_fixed_window_only_as_every_process_counts(
        redis_url, redis_prefix, theirs):
    """A fixed clock minute was learned from a server that says nothing (counted late). This
    process sent one request in the minute, two others ``theirs``, then this one's second is
    refused: with 4 of theirs, the minute's 6 requests explain the 429 (a server admitting
    5), so the fixed window stays (main: this process, seeing its own 2 of them, took the 429
    for one no fixed window gives and published a sliding window for every process); with
    none of theirs, a fixed window would have admitted it: a sliding window, as in memory."""
    import redis

    first, *others = [RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
                      for _ in range(3)]
    shape = first._key(None)[3]
    client = redis.Redis.from_url(redis_url)
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    if now % 10.0 > 6.0:  # early in a minute: every request in the same one
        await asyncio.sleep(10.0 - now % 10.0 + 0.1)
        now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    client.hset(shape, mapping={
        "v": "1", "kind": "fixed", "epoch": repr(now - now % 10.0), "late": "1", "sq": "1",
        "noreset": "1", "why": "a fixed window (test)", "charge": "1.1500,kept", "ck": "1"})
    assert (await first.reserve(None, QUOTAS, 100))[1] is not None  # (its mirror adopts it)
    for i in range(theirs):
        _, ticket = await others[i % 2].reserve(None, QUOTAS, 100)
        assert ticket is not None
    _, refused = await first.reserve(None, QUOTAS, 100)
    assert refused is not None
    first.unsaid(None, QUOTAS)  # its answers say nothing
    first.refused(None, QUOTAS, 1.0, ticket=refused)
    first.reconcile(None, refused, 100)
    await first.reserve(None, QUOTAS, 100)  # (it publishes what it learned before that)
    for backend in (first, *others):
        await backend.connection.aclose()  # the background writes have landed
    kind = client.hget(shape, "kind").decode()
    assert kind == ("fixed" if theirs else "sliding"), client.hgetall(shape)
    client.close()
    for backend in (first, *others):
        await backend.aclose()
