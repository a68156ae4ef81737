"""``apart.straddled`` on the shared log (issue #30): a burst every process admitted within the
margin before a clock minute, arriving after it, and what the server served since showing a
fixed window from the minute counted it before the minute. In memory
(``tests/admission/test_silent_cold.py``) a cold silent bucket started at :59.2 ran 1.11x the
ideal without it (the first probe waited for the next minute), 1.01x with it.

Real Redis and real time (server time is the wall clock, whose minutes a silent server is
probed at): the log each test writes stands for what the other processes admitted and had
answered; what is asserted is what one reservation is told. A 10 s minute, 10 requests a
window, a margin of 0.5 s (a cold network's): 8 admitted 0.4 s before the minute (or 0.05 s
after it), 4 more after it, all served.
"""

import asyncio

import pytest

from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _silent

pytestmark = pytest.mark.looptime(False)

W, LIMIT, MARGIN = 10.0, 10, 0.5
QUOTAS = (Quota(LIMIT, W + MARGIN, False, learn=True, margin=MARGIN),)
#: ``QUOTAS`` as the Lua scripts take them: limit/window/is_tokens/learns/margin.
QUOTAS_ARGS = [LIMIT, W + MARGIN, 0, 1, MARGIN]


async def served_around_the_minute(redis_url, prefix, burst_at):
    """A key whose server says nothing (``sq``): 8 requests admitted ``burst_at`` s after a
    clock minute (negative: before it), then 4 at 0.1-0.4 s after it, each answered (``done``),
    2-7 s into the minute now: (backend, a client of the server, the key's names, the minute)."""
    import redis

    backend = RedisBackend(redis_url, prefix=prefix, timeout=30.0)
    names, client = backend._key(None), redis.Redis.from_url(redis_url)
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    if not 2.0 <= now % W <= 7.0:  # (all admitted before now, the minute's probe still due)
        await asyncio.sleep((W + 2.0 - now % W) % W)
        now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    b = now - now % W
    log, _, _, shape, done = names
    times = [b + burst_at] * 8 + [b + 0.1 * (i + 1) for i in range(4)]
    for i, at in enumerate(times):
        client.zadd(log, {f"p.{i}~1:1": at})
        client.zadd(done, {f"p.{i}~1": b + 1.0})
    client.hset(shape, "sq", "1")
    return backend, client, names, b


@pytest.mark.parametrize("burst_at, probed", [(-0.4, True), (0.05, False)])
async def test_the_first_probe_goes_once_ours_served_show_the_burst_counted_before_the_minute(
        redis_url, redis_prefix, burst_at, probed):
    """12 served, 10 a window: the sliding log is full, and a fixed window from the minute
    counting the 8 admitted within the margin before it would have refused two of them, so
    it counted them before the minute (from the clocks' skew before it: the 4 after, room):
    the first probe goes now, for every process (main: only at the next minute, paced as a
    sliding log meanwhile). A burst admitted after the minute overflows such a window alone:
    no fixed window from it, no probe."""
    backend, client, _, _ = await served_around_the_minute(redis_url, redis_prefix, burst_at)
    wait, ticket = await backend.reserve(None, QUOTAS, 0)
    if probed:
        assert ticket is not None and ticket.silent == 3, wait
    else:
        assert ticket is None and wait > 0
    client.close()
    await backend.aclose()


async def test_a_first_probe_served_dates_the_burst_before_the_minute(redis_url,
                                                                      redis_prefix):
    """The first probe served after the straddled burst: paced within both from the minute
    on, its fixed window counts every process's requests from the clocks' skew before it (the
    4 after it and the probe: room for 5 more), not the burst the server counted before it
    (main: 13 counted, nothing until the next minute)."""
    backend, client, names, b = await served_around_the_minute(redis_url, redis_prefix, -0.4)
    log, state, _, shape, done = names
    client.zadd(log, {"q.1~1:1": b + 1.5})
    client.hset(shape, "sp", f"3,{b + 1.5!r},{b!r},q.1~1")
    await backend.connection.call(
        _silent.VERDICT, [shape, state, log, done],
        ["q.1~1", "served", "", "q.1~1:1", _silent.OVERFLOWED, *QUOTAS_ARGS], "test")
    got = {k.decode(): v.decode() for k, v in client.hgetall(shape).items()}
    assert "kind" not in got and float(got["ss"]) == pytest.approx(b)
    wait, ticket = await backend.reserve(None, QUOTAS, 0)
    assert ticket is not None, wait
    client.close()
    await backend.aclose()
