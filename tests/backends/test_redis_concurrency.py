"""RedisConcurrencyLimiter against the real Redis: a shared limit, leases that outlive nobody.

Real time (the leases expire on the server clock): looptime is off, leases are sub-second and
every wait is bounded by max_wait.
"""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter
from llmguard.backends.redis._slots import FIRST_POLL, MAX_POLL, poll_delay

ROOT = Path(__file__).resolve().parents[2]


def test_backoff_grows_to_the_ceiling_and_respects_the_hint():
    """Polling delays double from FIRST_POLL up to MAX_POLL, jittered within [d/2, d], and never
    exceed the server's hint of when the earliest lease expires."""
    assert poll_delay(0, 10, rand=0.0) == FIRST_POLL / 2
    assert poll_delay(0, 10, rand=0.999) < FIRST_POLL
    assert poll_delay(20, 10, rand=0.999) <= MAX_POLL
    assert poll_delay(20, 0.0, rand=0.999) == pytest.approx(0.001)


@pytest.mark.looptime(False)
async def test_two_limiters_share_the_limit_and_the_layer_takes_either(redis_url, redis_prefix):
    """Two limiters (two processes' worth) on one name never hold more than `limit` permits
    together; ConcurrencyLimit takes the Redis limiter unchanged; all permits come back."""
    backends = [RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0) for _ in range(2)]
    limiters = [RedisConcurrencyLimiter(b, 3, name="api", lease=0.5, max_wait=5) for b in backends]
    held = peak = 0

    async def work(_):
        nonlocal held, peak
        held += 1
        peak = max(peak, held)
        await asyncio.sleep(0.02)
        held -= 1

    guarded = [lg.guard(lg.ConcurrencyLimit(limiter))(work) for limiter in limiters]
    await asyncio.gather(*(guarded[i % 2](i) for i in range(20)))
    assert peak == 3
    assert [limiter.in_flight for limiter in limiters] == [0, 0]
    for backend in backends:
        await backend.aclose()


@pytest.mark.looptime(False)
async def test_cancelled_waiter_leaves_no_permit_behind(redis_url, redis_prefix):
    """A waiter cancelled while polling Redis holds nothing afterwards, and the next acquire
    proceeds once the holder releases."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    a = RedisConcurrencyLimiter(backend, 1, name="c", lease=0.5)
    b = RedisConcurrencyLimiter(backend, 1, name="c", lease=0.5, max_wait=2)
    await a.acquire()
    waiter = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (b.in_flight, b.waiting, b.statistics().in_flight) == (0, 0, 0)
    a.release()
    await b.acquire()
    assert b.in_flight == 1
    b.release()
    await backend.aclose()


HOLDER = """
import asyncio, sys
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter

async def main(url, prefix):
    limiter = RedisConcurrencyLimiter(RedisBackend(url, prefix=prefix, timeout=30.0), 2, name="w", lease=1.0)
    await limiter.acquire()
    await limiter.acquire()
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.looptime(False)
async def test_killed_worker_permits_come_back_after_the_lease(redis_url, redis_prefix):
    """A worker holding both permits keeps them past its lease while alive (one renewal task
    renews them), and after SIGKILL they come back within about one lease."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, redis_prefix], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "held"
        backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
        blocked = RedisConcurrencyLimiter(backend, 2, name="w", lease=1.0, max_wait=2.0)
        with pytest.raises(lg.AdmissionTimeout, match="shared concurrency slots"):
            await blocked.acquire()  # 2 s: twice the lease, so only renewal kept them held
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    waiter = RedisConcurrencyLimiter(backend, 2, name="w", lease=1.0, max_wait=10)
    await waiter.acquire()
    await waiter.acquire()
    assert waiter.in_flight == 2
    waiter.release()
    waiter.release()
    await backend.aclose()


def test_construction_errors():
    """A non-RedisBackend or a bad lease is refused at construction, naming the argument."""
    with pytest.raises(TypeError, match="backend"):
        RedisConcurrencyLimiter(object(), 2)
    with pytest.raises(ValueError, match="lease"):
        RedisConcurrencyLimiter(RedisBackend(), 2, lease=0)
    with pytest.raises(ValueError, match="limit"):
        RedisConcurrencyLimiter(RedisBackend(), 0)
