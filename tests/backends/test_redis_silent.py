"""RedisBackend under ``refill="auto"`` against a server that says nothing (no rate-limit header,
a bare 429): probed once for every process sharing the key, the verdict shared.

Real Redis and real time (server time is the wall clock, whose minutes a silent server is
probed at): looptime is off, and the server's window is compressed to ``W`` seconds on the wall
clock. Three RateLimit layers, each with its own RedisBackend (three processes as far as
sharing goes), send 3x the quota at once, started two thirds into a window (where a sliding log
waits a whole window after each burst). What the tests assert is counts: calls done, 429s, the
most any server window saw, what each layer learned.
"""

import asyncio
import collections
import contextvars
import time

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _silent
from llmguard.testing import FixedWindowServer, TokenBucketServer
from llmguard.testing._shapes import SlidingWindowServer

pytestmark = pytest.mark.looptime(False)

#: The server's window (s, on the wall clock), its limit, our margin, the processes.
W, LIMIT, MARGIN, PROCESSES = 8.0, 24, 0.05, 3


def silent(kind: str, loop_now: float):
    """A server of ``kind`` saying nothing of its limits, its windows on the wall clock."""
    options = {"rpm": LIMIT, "window": W, "latency": 0.02, "rate_limit_headers": False,
               "retry_after": False}
    if kind == "fixed":
        return FixedWindowServer(epoch=loop_now - time.time() % W, **options)
    return {"sliding": SlidingWindowServer, "bucket": TokenBucketServer}[kind](**options)


async def run(kind: str, redis_url: str, prefix: str):
    """3x the quota from three processes, started 2/3 into a window: (server, layers,
    results, the server's arrivals admitted per wall-clock window, oldest first)."""
    await asyncio.sleep((2 * W / 3 - time.time() % W) % W)
    loop = asyncio.get_running_loop()
    server = silent(kind, loop.time())
    caller: contextvars.ContextVar = contextvars.ContextVar("caller")
    server.on_headers.append(lambda headers: caller.get().observe_headers(headers))
    layers = []
    for _ in range(PROCESSES):
        layer = lg.RateLimit(rpm=LIMIT, backend=RedisBackend(redis_url, prefix=prefix,
                                                              timeout=30.0))
        layer.quotas = (Quota(LIMIT, W + MARGIN, False, learn=True, margin=MARGIN),)
        layers.append(layer)

    def guarded(layer):
        async def ask():
            caller.set(layer)
            return await server.acompletion(messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5)
        return lg.Pipeline(lg.Retry(attempts=4), layer).wrap(ask)

    sends = [guarded(layer) for layer in layers]
    results = await asyncio.gather(*(sends[i % PROCESSES]() for i in range(3 * LIMIT)),
                                   return_exceptions=True)
    for layer in layers:  # one more reservation each: a process adopts a verdict at its next
        await layer.backend.reserve(None, layer.quotas, 0)  # (one done already may not have)
    offset = time.time() - loop.time()
    windows = collections.Counter(int((a.at + offset) // W) for a in server.arrivals
                                  if a.status == 200)
    for layer in layers:
        await layer.backend.aclose()
    return server, layers, results, [windows[i] for i in sorted(windows)]


async def test_a_silent_fixed_window_is_learned_once_for_every_process(redis_url, redis_prefix):
    """Against a fixed clock window that says nothing, three processes: the probes (one just
    after the window's boundary beyond a sliding window, one beyond a token bucket) go once
    for all of them and are served; every process paces by the fixed window from then on, so
    each window after the first is filled to the limit, and none is refused."""
    server, layers, results, windows = await run("fixed", redis_url, redis_prefix)
    assert not any(isinstance(r, BaseException) for r in results)
    assert server.statistics().rate_limited == 0
    assert max(windows) <= LIMIT
    shapes = [layer.statistics().shape for layer in layers]
    assert all(s.startswith("fixed (a request beyond what a token bucket") for s in shapes), (
        shapes, windows)
    assert windows[1:3] == [LIMIT, LIMIT], windows  # (a sliding log: 3 + 21, the rest later)


@pytest.mark.parametrize("kind", ["sliding", "bucket"])
async def test_a_silent_sliding_window_or_bucket_refuses_one_probe_for_all_processes(
        redis_url, redis_prefix, kind):
    """Against a sliding window or a token bucket that says nothing, three processes: at most
    one request refused for all of them (the probe a fixed window would have served), every
    process then paces as a sliding window (no fixed window learned), every call done."""
    server, layers, results, windows = await run(kind, redis_url, redis_prefix)
    assert not any(isinstance(r, BaseException) for r in results)
    assert server.statistics().rate_limited <= 1
    shapes = [layer.statistics().shape for layer in layers]
    assert not any(s.startswith("fixed") for s in shapes), shapes
    if kind == "sliding":  # (arrivals: the refused probe's too)
        stats = server.statistics()
        assert stats.peak_window_requests <= LIMIT + stats.rate_limited


@pytest.mark.parametrize("answered", [4, 3])
async def test_a_first_probe_served_after_a_minute_overflowed_is_a_buckets(
        redis_url, redis_prefix, answered):
    """``apart.overflowed`` on the shared log: the first probe of a server that says nothing
    (just after a clock minute, beyond a sliding window) is served, and four requests of
    other processes, answered and served in the minute before (a fifth refused, a sixth
    not answered yet), overflow a fixed window of 3: no fixed window counted them, so a token
    bucket, learned at once for every process. Three answered fit one: paced within both
    (``ss``, the minute the probe was served at), as before."""
    import redis

    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    log, state, _, shape, done = backend._key(None)
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    b = now - now % 10.0  # the minute (of 10 s) the probe went just after
    for i in range(6):
        member = f"p.{i}~10"
        client.zadd(log, {f"{member}:{'r:' if i == 4 else ''}12": b - 9.0 + i})
        if i < answered or i == 4:  # the fifth refused (429: answered, counted by none)
            client.zadd(done, {member: b - 0.5})
    client.zadd(log, {"q.1~10:12": b + 0.1})
    client.hset(shape, mapping={"sq": "1", "sp": f"3,{b + 0.1!r},{b!r},q.1~10"})
    await backend.connection.call(
        _silent.VERDICT, [shape, state, log, done],
        ["q.1~10", "served", "", "q.1~10:12", _silent.OVERFLOWED, 3, 10.05, 0, 1, 0.05], "test")
    got = {k.decode(): v.decode() for k, v in client.hgetall(shape).items()}
    if answered == 4:
        assert (got.get("kind"), got.get("why")) == ("bucket", _silent.OVERFLOWED)
        assert "ss" not in got and "sp" not in got
    else:
        assert "kind" not in got and float(got["ss"]) == pytest.approx(b)
    client.close()
    await backend.aclose()


@pytest.mark.parametrize("outcome", ["served", "refused"])
async def test_a_spent_minute_is_probed_within_the_bucket(redis_url, redis_prefix, outcome):
    """``apart.spent`` on the shared log: paced within both (the first probe served at the
    minute ``ss``), with a token quota whose charge is a guess (no probe beyond the bucket
    then: a bucket charging less may serve it), ours spend the minute's count as the bucket
    refills. Once the bucket holds one more, it goes as the probe beyond the minute (stage 6),
    not at the next minute (main: nothing until then): served, a token bucket for every
    process; refused, a fixed window from that minute."""
    import redis

    quotas = (Quota(6, 6.05, False, learn=True, margin=0.05),
              Quota(6_000, 6.05, True, learn=True, margin=0.05))
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    shape = backend._key(None)[3]
    client = redis.Redis.from_url(redis_url)
    now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    if now % 6.0 > 1.0:  # early in a minute: the burst and two refills fit before its end
        await asyncio.sleep(6.0 - now % 6.0 + 0.1)
        now = (lambda t: t[0] + t[1] / 1e6)(client.time())
    client.hset(shape, mapping={"sq": "1", "ss": repr(now - now % 6.0)})
    admitted = []
    while len(admitted) < 7:  # the 6th when the bucket refilled; the 7th beyond the minute
        wait, ticket = await backend.reserve(None, quotas, 100)
        if ticket is None:
            await asyncio.sleep(wait)
        else:
            admitted.append(ticket.silent)
    assert admitted == [0, 0, 0, 0, 0, 0, 6], admitted  # (main: the 7th at the next minute)
    if outcome == "refused":
        backend.refused(None, quotas, 0.001, ticket=ticket)
    backend.reconcile(None, ticket, 100)
    await backend.connection.aclose()  # the background writes have landed
    got = {k.decode(): v.decode() for k, v in client.hgetall(shape).items()}
    assert got["kind"] == ("bucket" if outcome == "served" else "fixed"), got
    assert got["why"] == _silent.WHY[(outcome, 6)]
    client.close()
    await backend.aclose()


async def test_a_probe_beyond_a_bucket_dry_only_at_a_guessed_charge_shows_no_fixed_window(
        redis_url, redis_prefix):
    """Paced within both, the charge's probe refused (``ck``: what the server charges is
    still a guess, kept at the factor), ours sent just before the minute leave the token
    bucket dry as we count them while the minute has room: the probe beyond the bucket goes
    (as in memory), and served, it shows no fixed window (a bucket charging less than we
    count serves it: taken for a fixed window, the burst it admitted drew 4-6 429s from a
    strict bucket, ``bench_distributed.py --silent-only``): the factor comes down instead
    (``_refuted_scripts.cheaper``), unless a 429 refuted every bucket (``refute``)."""
    from test_redis_silent_turns import within_both

    backend, quotas, client, shape = await within_both(redis_url, redis_prefix, 0.5, 200)
    ticket = None
    while ticket is None:
        wait, ticket = await backend.reserve(None, quotas, 200)
        if ticket is None:
            await asyncio.sleep(wait)
    backend.reconcile(None, ticket, 200)
    await backend.connection.aclose()
    assert client.hget(shape, "kind") in (None, b"unknown")
    client.close()
    await backend.aclose()
