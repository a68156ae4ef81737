"""RedisBackend under ``refill="auto"`` against a server that says nothing: what the most a token
bucket charges (``_charged_scripts.CHARGED``) needs of ours that left the shared log
(``_carry_scripts``), as memory's :mod:`llmguard._admission.ratelimit.carry` keeps them. Real
Redis, a log written here, nothing timed."""

import pytest

from llmguard.backends.redis import RedisBackend
from test_redis_silent_charge import ESTIMATE, QUOTAS, charged, logged

pytestmark = pytest.mark.looptime(False)


async def test_a_served_probe_is_bounded_by_ours_that_left_the_log(redis_url, redis_prefix):
    """A learned 4,500-token bucket (10 s, 450 a second): a burst of 20 of ours 12 s ago,
    then 22 more within the last 9 s, the last one the charge's probe, served. A bucket full at
    the burst charging f admitted them all: 4,500 + 11.9 s of refill over their 42 estimates,
    one token less each: 1.1233x at most. The next reservation trims the burst from the log;
    before, it was forgotten (the bound from any of ours still logged, the bucket taken full
    there, is 1.85x) and the factor stayed at the opening 1.15x for good: a cold silent bucket
    paced at 1.15x its charge, 1.23x the ideal from :10 where memory ran 1.08x."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    burst = [("p0", 12.0, 240)] * 20
    paced = [(f"p{i % 3}", 9.0 - i * 8.9 / 21, 240) for i in range(22)]
    names = await logged(backend, "bucket", burst + paced)
    await backend.reserve(None, QUOTAS, ESTIMATE)  # trims the burst, older than a window
    assert await backend.connection.redis.zscore(backend._key(None)[0], names[0]) is None
    charge, _, _, _ = await charged(backend, "served", names[-1])
    most = (4_500 + 450 * 11.9 - 42) / (42 * ESTIMATE)
    assert float(charge.split(",")[0]) == pytest.approx(most, abs=2e-4)
    await backend.aclose()
