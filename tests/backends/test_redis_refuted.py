"""A token bucket refuted on the shared log (``backends.redis._refuted_scripts``; in memory,
``ratelimit.refuted``): each probe served bounds from above what a bucket of the quota may
charge, each 429 from below; a floor above the ceiling, with a first probe served after the
clock minute, is a fixed window for every process. Not shared, a strict silent fixed window
stayed unknown in Redis, paced within both (bench_distributed --silent-only: 1.75x where memory
ran 1.46x, 1.76x at 0.33 s latency where memory learned it at 1.00x).

Real Redis, nothing timed: the scripts run on a log written here (members carrying each
request's bare estimate, three processes' alike), times relative to the server's clock.
"""

import pytest

from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, _charge, _refuted_scripts, _silent

pytestmark = pytest.mark.looptime(False)

#: A requests quota that does not bind and a token quota that does (10 s windows).
QUOTAS = (Quota(60, 10.05, False, learn=True, margin=0.05),
          Quota(4_500, 10.05, True, learn=True, margin=0.05))
ESTIMATE, RESERVED, RATE = 208, 240, 4_500 / 10.0


async def logged(backend, ago, **shape):
    """The key's log: one request per ``ago`` (seconds before now on the server's clock) of
    three processes; the shape hash holding ``shape``: (now, the members, their times)."""
    redis = backend.connection.redis
    names = backend._key(None)
    now = float((await redis.time())[0])
    members = [f"{_charge.estimated(f'p{seq % 3}.{seq}', ESTIMATE)}:{RESERVED}"
               for seq in range(len(ago))]
    await redis.zadd(names[0], {m: now - a for m, a in zip(members, ago)})
    await redis.hset(names[3], mapping={"kind": "unknown", "sq": "1", **shape})
    return now, members, [now - a for a in ago]


async def charged(backend, outcome, member):
    names = backend._key(None)
    await backend.connection.call(
        _charge.CHARGED, [names[3], names[0], names[1]],
        [outcome, member, *backend._learning.args(QUOTAS)[1:]], "test")


async def shape_of(backend):
    got = await backend.connection.redis.hgetall(backend._key(None)[3])
    return {k.decode(): v.decode() for k, v in got.items()}


async def test_a_probe_served_lowers_the_shared_ceiling(redis_url, redis_prefix):
    """The charge's probe, the 19th of a burst, served: a bucket admitted the 19 within the
    quota plus its refill since any one of them (each arriving when admitted, the probe up to
    the margin later), so it charges at most that over their estimates."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    _, members, times = await logged(backend, [3.0 - i * 0.01 for i in range(19)],
                                     charge="1.1500,silent")
    await backend.connection.redis.hset(backend._key(None)[3], "cp",
                                        f"0,{members[-1].rpartition(':')[0]}")
    await charged(backend, "served", members[-1])
    at, expected = times[-1], min(
        (4_500 + RATE * (times[-1] + 0.05 - s)) / (ESTIMATE * (19 - k))
        for k, s in enumerate(times))
    shape = await shape_of(backend)
    assert float(shape["rc"]) == pytest.approx(expected)
    assert float(shape["rp"]) == pytest.approx(min(
        (4_500 + RATE * (at - s)) / (ESTIMATE * (19 - k)) for k, s in enumerate(times)))
    assert shape["kind"] == "unknown"
    await backend.aclose()


@pytest.mark.parametrize("ceiling", [1.10, 1.30])
async def test_a_429_no_bucket_that_served_the_probes_gives_is_a_fixed_windows(
        redis_url, redis_prefix, ceiling):
    """A first probe was served after the minute (``ss``: a fixed window or a bucket), and
    a probe served showed a bucket charges at most ``ceiling``; then the 18th of a burst is
    refused: a bucket, full at most, must have charged 4,545 over 18 estimates (1.21x) to
    refuse it. Above 1.10: no bucket gave both, a fixed window from that minute did, for
    every process (its factor, 1.3x, down to what a probe's clock minute admitted: 1.25x,
    ``bounds.windowed``). Below 1.30: a bucket stays possible."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    now, members, _ = await logged(backend, [1.0 - i * 0.005 for i in range(18)],
                                   charge="1.3000,kept", cc="1.25", ss="1000.0",
                                   rc=repr(ceiling))
    await charged(backend, "refused", members[-1])
    shape = await shape_of(backend)
    assert float(shape["rf"]) > 1.2
    if ceiling < 1.2:
        assert shape["kind"] == "fixed" and shape["epoch"] == "1000" and shape["late"] == "1"
        assert shape["why"] == _refuted_scripts.WHY and shape["v"] == "1"
        assert shape["charge"] == "1.2500,kept"  # (what a probe's clock minute admitted)
        assert "ss" not in shape
    else:
        assert shape["kind"] == "unknown" and "v" not in shape
    await backend.aclose()


async def probe_beyond(backend, refuted):
    """A probe beyond the bucket as every process counts ours (``4``) served, the factor
    guessed (a 429 kept it at 1.15x above the 1.08x it showed), the floor ``refuted`` above
    any ceiling or not: the shape hash after its verdict."""
    floor = "1.3" if refuted else "1.0817"
    now, members, _ = await logged(backend, [1.0 - i * 0.005 for i in range(19)],
                                   charge="1.1500,kept", cl="1.0817", rf=floor)
    names = backend._key(None)
    boundary = repr(now - 2.0)
    await backend.connection.redis.hset(names[3], mapping={
        "ss": boundary, "sp": f"4,{now},{boundary},{members[-1].rpartition(':')[0]}"})
    await backend.connection.call(
        _silent.VERDICT, [names[3], names[1], names[0], names[4]],
        [members[-1].rpartition(":")[0], "served", _silent.WHY[("served", 4)], members[-1],
         _silent.OVERFLOWED, *backend._learning.args(QUOTAS)[1:]], "test")
    return await shape_of(backend)


async def test_a_probe_beyond_a_guessed_bucket_served_lowers_the_factor(redis_url, redis_prefix):
    """Beyond the bucket only at the factor guessed: a bucket charging less could have served
    it (``apart.cheaper``), so it proves no fixed window; the factor comes down to the most
    such a bucket allows (the 19 of the burst within 4,500 and a margin's refill, each
    rounded up: 1.1395x), and the probing goes on."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    shape = await probe_beyond(backend, refuted=False)
    assert shape["kind"] == "unknown" and "sp" not in shape and "ss" in shape
    assert 1.13 < float(shape["charge"].split(",")[0]) < 1.15
    await backend.aclose()


async def test_a_probe_beyond_a_refuted_bucket_served_is_a_fixed_windows(redis_url, redis_prefix):
    """As above, a 429 having shown a bucket must charge 1.3x where the probe shows at most
    1.14x: no bucket, a fixed window."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    shape = await probe_beyond(backend, refuted=True)
    assert shape["kind"] == "fixed" and shape["late"] == "1"
    await backend.aclose()


class _Window:
    """What ``_charge.refused`` reads of a process's window: its mirror's charge."""

    def __init__(self):
        self.charge = _charge.SharedCharge(4_500)
        self.charge.silent = True


class _Probe:
    """A refused ticket: the shape's first probe (``3``) or another request (``0``)."""

    def __init__(self, member, stage):
        self.member, self.silent = member, stage


@pytest.mark.parametrize("kind", ["unknown", "sliding"])
@pytest.mark.parametrize("stage", [3, 0])
async def test_the_first_shape_probes_429_leaving_no_bucket_brings_a_kept_factor_to_the_window(
        redis_url, redis_prefix, kind, stage):
    """As bench_distributed's strict sliding window: a 429 kept the factor at 1.137x (a
    bucket's, beyond the 1.134x the window served: ``cw``), then the first probe of the shape,
    19 of ours 3.15 s before it, is refused: a bucket must charge 1.42x to refuse it where
    the probes showed it charges at most 1.147x. No bucket: a sliding window, whose count
    of ours bounds the factor (``learn_refusal``: ``bounds.windowed``), whether the sliding
    window's publication landed first (``kind``) or not. Kept at 1.137x, 18 of its 19 went a
    window (1.51x the ideal). Not another request's 429 (``0``)."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    _, members, _ = await logged(backend, [3.15 - i * 0.001 for i in range(19)] + [0.0],
                                 charge="1.1370,kept", cl="1.0817", ck="1", cw="1.1339",
                                 cc="1.1339", rf="1.0879", rc="1.1475", kind=kind)
    _charge.refused(backend.connection, _Window(), _Probe(members[-1], stage),
                    backend._key(None), backend._learning.args(QUOTAS)[1:])
    await backend.connection.kept()
    shape = await shape_of(backend)
    if stage or kind == "unknown":  # (the probe's floor read whatever the shape published)
        assert float(shape["rf"]) > 1.4
    assert shape["charge"] == ("1.1339,kept" if stage else "1.1370,kept")
    await backend.aclose()
