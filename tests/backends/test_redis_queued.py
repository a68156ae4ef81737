"""Ours queued below (admitted by RateLimit, waiting in an inner limiter's queue: not at the
server yet) and a reading over Redis under a learned token bucket (#30; in memory,
``ratelimit.queued`` subtracts them from what a reading leaves). Redis does not know them: a
reading of a request sent after one of them counts it as at the server. Its refund as it leaves
the queue (``held.Held.recount``: refunded, taken anew) then gives nothing back (the bucket's
deficit, ``_bucket_scripts.settle_bucket``: the reading drained what it held), so no room is
counted twice: the others take the room it held while it waits, and it waits for the refill.
The server never sees more than it has room for; only the order differs from memory (there the
call queued first keeps its room, and the others wait). Subtracting it in the reading as memory
does would count it twice here (its refund gives nothing back): tried, one room lost each.

Real Redis and real time (a key and prefix of its own; the only wait is the one that puts the
queued call more than a margin before the reading's request: a reading subtracts what was
admitted from a margin before its request on already)."""

import asyncio

import pytest

from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _learned_scripts

pytestmark = pytest.mark.looptime(False)

#: 5 requests a 600.5 s window (a bucket refilling one per 120 s: nothing within the test),
#: tokens that do not bind.
QUOTAS = (Quota(5, 600.5, False, learn=True, margin=0.5),
          Quota(100_000, 600.5, True, learn=True, margin=0.5))


async def landed(backend) -> None:
    """Wait for the backend's background writes (readings, caps, refunds) to reach Redis."""
    connection = getattr(backend, "connection", None)
    while connection is not None and (connection._tasks or connection._trying):
        await connection.landed()


async def admitted(backend) -> int:
    count = 0
    while (await backend.reserve(None, QUOTAS, 10))[1] is not None:
        count += 1
        assert count <= 5
    return count


@pytest.mark.parametrize("then", ["sent", "never sent"])
@pytest.mark.parametrize("others", ["while it waits", "after it left"])
async def test_a_call_queued_below_before_a_reading_is_never_counted_twice(
        redis_url, redis_prefix, then, others):
    """A learned bucket of 5 requests: ours A admitted, its call queued below; B admitted a
    second later and sent; B's answer says 2 remaining (the server counted B and two of another
    client's, not A). Others admitted while A waits take the 2; A then leaves the queue, sent
    (refunded, taken anew: no room, it waits) or never sent (refunded): nothing more for
    anyone. Others admitted after A left: sent, it takes one (1 for them); never sent, 2."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    names = backend._key(None)
    await backend.connection.call(_learned_scripts.PUBLISH, [names[3], names[1]],
                                  ["bucket", "", "", "test"], "test")
    _, queued = await backend.reserve(None, QUOTAS, 10)
    await asyncio.sleep(QUOTAS[0].margin + 0.1)
    _, sent = await backend.reserve(None, QUOTAS, 10)
    backend.observe(None, QUOTAS, False, 2, None, ticket=sent)
    await landed(backend)
    first = await admitted(backend) if others == "while it waits" else 0
    backend.refund(None, queued)  # A leaves the queue
    await landed(backend)
    taken = then == "sent" and (await backend.reserve(None, QUOTAS, 10))[1] is not None
    total = first + taken + await admitted(backend)
    assert total == 2  # what the server had room for, A counted when it is sent
    assert first == (2 if others == "while it waits" else 0)
    assert taken == (then == "sent" and others == "after it left")
    await backend.aclose()
