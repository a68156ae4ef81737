"""Redis faults around shared quotas (issue #35 item 4), each against a redis-server of the test's
own: a restart must not reopen a quota's window, a refused command is not an outage, a fresh
deployment does not wait, and a backward step of the server's clock does not stall admission.

Real time: looptime is off; every wait is bounded by a max_wait or the backend's timeout, and no
test sleeps through a rate-limit window (the fenced waits are read, not waited for).
"""

import asyncio
import shutil
import time

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, RedisStore

pytestmark = [
    pytest.mark.looptime(False),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

RPM = (Quota(10, 60.0, False),)


@pytest.mark.parametrize("refill", ["window", "continuous"])
async def test_a_restart_does_not_reopen_the_window(server, refill):
    """rpm=10 spent, then Redis restarts (its window and buckets are lost): the process that
    used it admits nothing more until one window has passed (20 were admitted in 3.2 s)."""
    quotas = (Quota(10, 60.0, False, refill == "continuous"),)
    backend = RedisBackend(server.url, prefix="t", on_error="fail", timeout=5.0)
    for _ in range(10):
        assert (await backend.reserve(None, quotas, 0))[1] is not None
    assert (await backend.reserve(None, quotas, 0))[1] is None  # the quota is spent
    server.stop()
    with pytest.raises(lg.BackendUnavailable):
        await backend.reserve(None, quotas, 0)
    server.start()
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and 55 < wait <= 61, wait
    other = RedisBackend(server.url, prefix="t", on_error="fail", timeout=5.0)
    wait, ticket = await other.reserve(None, quotas, 0)  # another process: the same fence
    assert ticket is None and 55 < wait <= 61, wait
    await backend.aclose()
    await other.aclose()


async def test_a_fresh_deployment_is_admitted_at_once(server):
    """A new server and new processes: the first permit and the first admission do not wait
    for a restart fence (a lease, 10 s by default, on every deploy)."""
    backend = RedisBackend(server.url, prefix="t", on_error="fail", timeout=5.0)
    limiter = RedisConcurrencyLimiter(backend, 2, name="api", max_wait=2.0)  # lease 10 s
    await limiter.acquire()
    limiter.release()
    wait, ticket = await backend.reserve(None, RPM, 0)
    assert ticket is not None and wait == 0.0
    await backend.aclose()


async def test_a_refused_cache_write_does_not_make_the_quota_local(server):
    """An ACL refuses the cache's SET (a command error, not an outage): the call still answers,
    the cache counts a store error, and the rate limit sharing that connection stays shared:
    another process finds the quota spent (the provider saw 6 against a shared rpm=3)."""
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-set")
    url = f"redis://app:pw@127.0.0.1:{server.port}/0"
    backend = RedisBackend(url, prefix="t", on_error="local", timeout=5.0)
    cache = lg.Cache(ttl=60, store=RedisStore(backend))
    sent: list[str] = []

    async def ask(prompt: str) -> str:
        sent.append(prompt)
        return prompt.upper()

    guarded = lg.guard(cache, lg.RateLimit(rpm=3, backend=backend))(ask)
    assert [await guarded(p) for p in ("a", "b", "c")] == ["A", "B", "C"]
    assert cache.statistics().store_errors >= 1
    assert not backend.connection.down()
    other = RedisBackend(url, prefix="t", on_error="local", timeout=5.0)
    late = lg.guard(lg.RateLimit(rpm=3, backend=other, max_wait=1.0))(ask)
    with pytest.raises(lg.AdmissionTimeout):
        await late("d")
    assert sent == ["a", "b", "c"]
    await backend.aclose()
    await other.aclose()
    admin.close()


async def test_a_refused_script_fails_the_call_instead_of_going_local(server):
    """An ACL that forbids scripts fails the reservation with Redis's own error and a note that
    this is not an outage: the quota is not silently replaced by a per-process one."""
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-evalsha",
                          "-eval")
    backend = RedisBackend(f"redis://app:pw@127.0.0.1:{server.port}/0", prefix="t",
                           on_error="local", timeout=5.0)
    with pytest.raises(Exception, match="NOPERM|no permissions") as info:
        await backend.reserve(None, RPM, 0)
    assert any("not an outage" in note for note in info.value.__notes__)
    assert not backend.connection.down()
    await backend.aclose()
    admin.close()


@pytest.mark.parametrize("refill", ["window", "continuous"])
async def test_a_backward_step_of_the_server_clock_does_not_stall_admission(server, refill):
    """The server's clock steps back 120 s (a bad NTP sync): the admissions made 70 s before
    the step are old, not 50 s in the future, and a pause of 1 s stays 1 s. Simulated by
    writing what the scripts would have written before the step, 120 s ahead of the clock."""
    quotas = (Quota(10, 60.0, False, refill == "continuous"),)
    backend = RedisBackend(server.url, prefix="t", on_error="fail", timeout=5.0)
    assert (await backend.reserve(None, quotas, 0))[1] is not None  # creates the marker
    admin = server.client()
    log, state, fence = "t:rl:{}:log", "t:rl:{}:state", "t:rl:{}:fence"
    now = time.time()
    before_step = now + 120  # the server's clock before it stepped back
    admin.delete(log, state)
    if refill == "window":
        admin.zadd(log, {f"old{i}:0": before_step - 70 + i for i in range(10)})
    else:
        admin.hset(state, mapping={"l1": 0, "a1": before_step - 70, "d1": 0, "o1": 0,
                                   "b": before_step - 200})
    admin.hset(state, "pause", before_step + 1)  # a 1 s Retry-After pause, set at the step
    admin.hset(fence, "last", before_step)
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is None and wait <= 1.1, wait  # the 1 s pause, not 121 s
    await asyncio.sleep(wait)
    wait, ticket = await backend.reserve(None, quotas, 0)
    assert ticket is not None, wait  # the 70 s old admissions have left the window
    await backend.aclose()
    admin.close()
