"""RedisBackend under ``refill="auto"`` with a token quota: reservations in Redis are what the
server is believed to count (``charge.Charge``: the opening factor, then the one calibrated from
the drop in ``x-ratelimit-remaining-tokens``), settlements keep what it charged, and what one
process calibrated is shared with the others through the key's shape hash.

Real Redis (looptime off); nothing here depends on timing.
"""

import math

import pytest

from llmguard._admission.ratelimit.charge import OPENING
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

TOKENS = (Quota(10_000, 60.5, True, learn=True, margin=0.5),)


async def members(backend):
    """The tokens of each reservation in the key's shared log, oldest first."""
    log = await backend.connection.redis.zrange(backend._key(None)[0], 0, -1)
    return [int(member.rsplit(b":", 1)[1]) for member in log]


async def test_what_one_process_calibrates_is_reserved_settled_and_shared(
        redis_url, redis_prefix):
    """Ten calls estimated at 100 tokens are reserved in Redis at the opening factor (115);
    their answers' readings show the server charges 110 each, so they settle at 110 though
    each used 20 (the server gives nothing back), and the next reservation of the process
    tells the others: a process that has heard nothing reserves its next call at 110."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    burst = [(await first.reserve(None, TOKENS, 100))[1] for _ in range(10)]
    assert await members(first) == [math.ceil(OPENING * 100)] * 10
    order = [4, 0, 9, 2, 7, 1, 8, 3, 6, 5]  # the order they reached the server in
    remaining = {seq: 10_000 - 110 * (position + 1) for position, seq in enumerate(order)}
    for seq in [5, 0, 3, 9, 1, 8, 2, 7, 4, 6]:
        first.observe(None, TOKENS, True, remaining[seq], 30.0, ticket=burst[seq])
    for ticket in burst:
        first.reconcile(None, ticket, 20)
    assert (await first.reserve(None, TOKENS, 100))[1] is not None  # carries and tells
    assert await members(first) == [110] * 11
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    for _ in range(2):  # the first reply brings the shared charge
        assert (await other.reserve(None, TOKENS, 100))[1] is not None
    assert (await members(other))[-2:] == [math.ceil(OPENING * 100), 110]
    await first.aclose()
    await other.aclose()
