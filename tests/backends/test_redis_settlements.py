"""RedisBackend under the default ``refill="auto"``: settlements ride on the next reservation of
their key, or go together in one script, and each is applied exactly once (``_settlements``).

Real Redis and real time: looptime is off. What they assert is the shared state after the
scripts ran (the log's entries, the bucket's outstanding units) and which scripts were sent.
"""

import asyncio

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _auto_scripts
from llmguard.backends.redis._client import Connection

pytestmark = pytest.mark.looptime(False)

#: 3 requests per 0.3 s server window, 0.01 s margin, shape to be learned.
LEARNED = (Quota(3, 0.31, False, learn=True, margin=0.01),)


@pytest.fixture
def scripts(monkeypatch):
    """The scripts every Connection runs, in order: 'RESERVE' or 'SETTLE' (others by name)."""
    sent = []
    call = Connection.call

    async def counted(self, script, keys, args, what):
        sent.append({_auto_scripts.RESERVE: "RESERVE", _auto_scripts.SETTLE: "SETTLE"}.get(
            script, "other"))
        return await call(self, script, keys, args, what)

    monkeypatch.setattr(Connection, "call", counted)
    return sent


async def shared(backend):
    """(entries in the key's log, the request bucket's outstanding units) in Redis now."""
    names, client = backend._key(None), backend.connection.redis
    outstanding = await client.hget(names[1], "o1")
    return await client.zcard(names[0]), float(outstanding or 0)


async def test_a_settlement_rides_on_the_next_reservation(redis_url, redis_prefix, scripts):
    """A reservation settled as reserved, then the next one at once: two round trips, no
    SETTLE; the first is no longer outstanding in the bucket, the second is."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    first = (await backend.reserve(None, LEARNED, 0))[1]
    backend.reconcile(None, first, 0)
    assert (await backend.reserve(None, LEARNED, 0))[1] is not None
    assert scripts == ["RESERVE", "RESERVE"]
    assert await shared(backend) == (2, 1.0)
    await backend.aclose()


async def test_a_carried_refund_gives_its_room_to_the_reservation_carrying_it(
        redis_url, redis_prefix, scripts):
    """A full quota, one reservation refunded, the next reservation at once: admitted (the
    refund settled first in its script), with no SETTLE of its own."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    tickets = [(await backend.reserve(None, LEARNED, 0))[1] for _ in range(3)]
    backend.refund(None, tickets[0])
    assert (await backend.reserve(None, LEARNED, 0))[1] is not None
    assert (await backend.reserve(None, LEARNED, 0))[1] is None
    assert "SETTLE" not in scripts
    assert await shared(backend) == (3, 3.0)
    await backend.aclose()


async def test_settlements_of_one_turn_go_in_one_script(redis_url, redis_prefix, scripts):
    """Three reservations settled in one loop turn (two reconciled, one refunded) with no
    reservation following: one SETTLE for the three; nothing outstanding, two in the log."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    tickets = [(await backend.reserve(None, LEARNED, 0))[1] for _ in range(3)]
    backend.reconcile(None, tickets[0], 0)
    backend.refund(None, tickets[1])
    backend.reconcile(None, tickets[2], 0)
    for _ in range(3):
        await asyncio.sleep(0)
    await backend.connection.aclose()  # waits for the background write
    assert scripts == ["RESERVE"] * 3 + ["SETTLE"]
    assert await shared(backend) == (2, 0.0)
    await backend.aclose()


async def test_aclose_sends_the_settlements_still_queued(redis_url, redis_prefix):
    """Settled just before aclose: written before the connection closes."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    ticket = (await backend.reserve(None, LEARNED, 0))[1]
    backend.refund(None, ticket)
    await backend.aclose()
    assert await shared(backend) == (0, 0.0)
    await backend.aclose()


async def test_a_reservation_cancelled_mid_round_trip_applies_its_settlements_once(
        redis_url, redis_prefix):
    """A full quota, one refunded, and the reservation carrying the refund cancelled during its
    round trip: the refund is applied once (one unit back: the cancelled reservation's unit
    stays taken, as documented), and the cancelled one's log entry goes after its script ran."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    tickets = [(await backend.reserve(None, LEARNED, 0))[1] for _ in range(3)]
    backend.refund(None, tickets[0])
    carrying = asyncio.ensure_future(backend.reserve(None, LEARNED, 0))
    await asyncio.sleep(0)
    assert backend._learning.settlements.take(backend._key(None), LEARNED) == []  # carried
    carrying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await carrying
    await backend.connection.aclose()  # the script and the refund after it have run
    assert await shared(backend) == (2, 3.0)
    await backend.aclose()


async def test_sequential_calls_through_the_layer_leave_nothing_outstanding(
        redis_url, redis_prefix, scripts):
    """RateLimit(rps=...) with the default refill: 20 calls one after another cost 20
    reservations and one SETTLE (the last call's, nothing followed it); all 20 counted, none
    outstanding."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    guarded = lg.guard(lg.RateLimit(rps=1000, backend=backend))(asyncio.sleep)
    for _ in range(20):
        await guarded(0)
    await asyncio.sleep(0.01)
    await backend.connection.aclose()
    assert scripts.count("RESERVE") == 20 and scripts.count("SETTLE") == 1
    assert await shared(backend) == (20, 0.0)
    await backend.aclose()
