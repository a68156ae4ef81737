"""A slow Redis delays what a process learned for every process, never loses it (#30): a probe's
verdict, the charge a 429 showed, the give-back verdict, a 429's lesson and pause, a header
reading and every quota spent are each written once, in the background; a write that timed out
(Redis's 0.5 s default, on a loaded machine) was dropped, and every process went on probing
what one had already learned (or counted as served a request the server refused). Retried, what
is dated lands dated as heard, and an older one lands under a newer one.

Against a redis-server of the test's own, stopped (SIGSTOP) until a write has timed out for
sure, then resumed: no timing assumption (the write cannot land while the server is stopped,
and the test waits for it to land, however long that takes).
"""

import asyncio
import os
import shutil
import signal

import pytest

from llmguard.backends.redis import _charge, _client, _giveback, _silent
from llmguard.backends.redis._client import Connection

pytestmark = [
    pytest.mark.looptime(False),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


class Ticket:
    """What the writers read of a probe's ticket."""

    def __init__(self, stage: int, member: str) -> None:
        self.silent, self.member = stage, member


NAMES = [f"t:{part}" for part in ("log", "state", "fence", "shape", "done")]
QUOTAS = [30, 10.05, 0, 1, 0.05]


async def while_stopped(server, connection, write, held=0.0):
    """Run ``write`` (it spawns a background write) while the server is stopped; resume the
    server ``held`` s after a command has timed out, and wait for what was spawned to land."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    errors = connection.errors
    write()
    while connection.errors == errors:  # (timed out: the server cannot have answered)
        await asyncio.sleep(0.05)
    await asyncio.sleep(held)
    os.kill(server.proc.pid, signal.SIGCONT)
    await connection.landed()
    await connection.kept()


async def test_a_probe_verdict_lands_after_a_timeout(server):
    """A silent server's first probe refused (a sliding window): every process's verdict."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    admin.hset(NAMES[3], "sp", "3,100,90,t:p1")
    await while_stopped(server, connection, lambda: _silent.refused(
        connection, type("Window", (), {"shape": None})(), 0.0, Ticket(3, "t:p1:5"), NAMES))
    assert admin.hget(NAMES[3], "kind") == b"sliding"
    await connection.aclose()


async def test_the_charge_a_429_showed_lands_after_a_timeout(server):
    """The charge probe's 429: the charge kept for every process (``ck``, ``cl``)."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    admin.hset(NAMES[3], mapping={"cp": "100,t:p1~100", "charge": "1.15,silent"})
    admin.zadd(NAMES[0], {"t:a~100:115": 1.0, "t:p1~100:115": 2.0})
    quotas = [1000, 10.05, 1, 1, 0.05]

    class Window:
        charge = type("C", (), {"heard": False, "silent": True})()

    await while_stopped(server, connection, lambda: _charge.refused(
        connection, Window(), Ticket(_charge.STAGE, "t:p1~100:115"), NAMES, quotas))
    assert admin.hget(NAMES[3], "ck") == b"1"
    await connection.aclose()


async def test_the_giveback_verdict_lands_after_a_timeout(server):
    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    await while_stopped(server, connection, lambda: _giveback.tell(
        connection, NAMES[3], True, "served beyond the bucket"))
    assert admin.hget(NAMES[3], "gb") == b"1"
    await connection.aclose()


async def test_closing_gives_a_kept_write_one_more_attempt_not_more(server):
    """aclose() never hangs on Redis being away: a verdict still retrying tries once more."""
    connection = Connection(server.url, "t", "local", 0.5)
    os.kill(server.proc.pid, signal.SIGSTOP)
    _giveback.tell(connection, NAMES[3], True, "why")
    while connection.errors == 0:
        await asyncio.sleep(0.05)
    await connection.aclose()  # returns with the server still stopped
    assert connection.errors >= 2


async def test_a_learned_shape_is_published_after_a_timeout(server):
    """What a process learned is published before its next reservation; one that timed out
    is published before the one after (it was dropped: the others never paced by it)."""
    from llmguard._admission.ratelimit.window import Quota
    from llmguard.backends.redis import RedisBackend

    admin, backend = server.client(), RedisBackend(server.url, prefix="t")
    quotas = (Quota(30, 10.05, False, learn=True, margin=0.05),)
    await backend.reserve(None, quotas, 0)
    backend._learning._pending[None] = ("sliding", None, (0,), "learned here", False, None)
    os.kill(server.proc.pid, signal.SIGSTOP)
    await backend.reserve(None, quotas, 0)  # (timed out: local)
    os.kill(server.proc.pid, signal.SIGCONT)
    while backend.connection.down():
        await asyncio.sleep(0.05)
    await backend.reserve(None, quotas, 0)
    assert admin.hget(backend._key(None)[3], "kind") == b"sliding"
    await backend.aclose()


async def test_a_429s_lesson_lands_after_a_timeout(server):
    """A 429 (``_refused_scripts.REFUSED``): its request marked refused in the shared log, the
    limit every process's requests show learned. Dropped after a timeout, the request stayed
    counted as served and the limit unlearned."""
    from llmguard.backends.redis import _refused_scripts

    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    admin.zadd(NAMES[0], {f"t:{i}:1": 1.0 + i / 100 for i in range(29)})
    admin.zadd(NAMES[0], {"t:refused:1": 1.5})
    await while_stopped(server, connection, lambda: _refused_scripts.learn(
        connection, "t:refused:1", NAMES, QUOTAS, None, False, "1"))
    assert admin.zscore(NAMES[0], "t:refused:r:1") == 1.5
    assert admin.hget(NAMES[3], "lims") == b"29"
    await connection.aclose()


def observing(connection, window=10.05):
    """A function reading a header (``remaining`` of 30 a ``window``, reset in 10 s, as of now)
    through a ``RedisLearning`` of ``connection``, its write in the background."""
    from llmguard._admission.ratelimit.backend import MemoryBackend
    from llmguard._admission.ratelimit.window import Quota
    from llmguard.backends.redis._learning import RedisLearning

    learning = RedisLearning(connection, MemoryBackend())
    quotas = (Quota(30, window, False, learn=True, margin=0.05),)
    return lambda remaining: learning.observe(None, quotas, False, remaining, 10.0, None, None,
                                              NAMES, as_of_now=True)


def server_time(admin):
    seconds, micros = admin.time()
    return seconds + micros / 1e6


async def test_a_reading_lands_after_a_timeout_dated_as_read(server):
    """A header reading (``_learned_scripts.READING``) written while Redis is stopped lands
    once it answers, its cap ending ``reset`` s after it was read, not after it landed (the
    server held a second past the timeout)."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    read = server_time(admin)
    await while_stopped(server, connection, lambda: observing(connection)(3), held=1.0)
    assert admin.hget(NAMES[1], "cap_r") == b"3"
    assert read + 10.0 <= float(admin.hget(NAMES[1], "until_r")) < read + 10.75
    await connection.aclose()


async def older_after_newer(server, monkeypatch, write, same=False):
    """``write(connection, older)`` twice: the older one while the server is stopped (it times
    out, retried 3 s later), then the newer one from another connection (another process; the
    same one: ``same``) as it came back, landing first; returns once the older one landed."""
    monkeypatch.setattr(_client, "RETRY_INTERVAL", 3.0)
    first, second = (Connection(server.url, "t", "local", 0.5) for _ in range(2))
    second = first if same else second
    os.kill(server.proc.pid, signal.SIGSTOP)
    write(first, True)
    while first.errors == 0:
        await asyncio.sleep(0.05)
    os.kill(server.proc.pid, signal.SIGCONT)
    write(second, False)
    await second.landed()
    await first.kept()
    assert first.errors == 1  # (the older one landed, after the newer)
    for connection in (first, second):
        await connection.aclose()


async def test_a_retried_reading_does_not_override_a_newer_one(server, monkeypatch):
    """A reading retried after a timeout lands after a newer one (another process's, read as
    the server came back): the newer cap stays."""
    await older_after_newer(server, monkeypatch,
                            lambda connection, older: observing(connection)(3 if older else 1))
    assert server.client().hget(NAMES[1], "cap_r") == b"1"


@pytest.mark.parametrize("same", [False, True])
async def test_a_retried_giveback_verdict_does_not_override_a_newer_one(server, monkeypatch,
                                                                         same):
    """A give-back verdict retried after a stall (Redis stopped) is dated by when it was
    reached: landing after a newer one, another process's or this one's own (kept in a later
    turn, its task's first attempt lands while the older one waits to be retried), it
    changes nothing."""
    await older_after_newer(server, monkeypatch, lambda connection, older: _giveback.tell(
        connection, NAMES[3], older, "older" if older else "newer"), same)
    assert server.client().hget(NAMES[3], "gb") == b"0"


async def test_a_pause_lands_after_a_timeout_as_long_as_asked(server):
    """A 429's pause (``_scripts.PAUSE``) lands after a timeout, ending when it was to end."""
    from llmguard._admission.ratelimit.window import Quota
    from llmguard.backends.redis import RedisBackend

    admin, backend = server.client(), RedisBackend(server.url, prefix="t")
    quotas = (Quota(30, 10.05, False, learn=True, margin=0.05),)
    _, ticket = await backend.reserve(None, quotas, 0)
    read = server_time(admin)
    await while_stopped(server, backend.connection, lambda: backend.refused(
        None, quotas, 5.0, ticket=ticket), held=1.0)
    assert read + 5.0 <= float(admin.hget(backend._key(None)[1], "pause")) < read + 5.75
    await backend.aclose()


async def test_spent_quotas_land_after_a_timeout_as_of_when_found(server):
    """Every quota spent (``_learned_scripts.SPENT``: a run resumed after a kill) lands after a
    timeout, its caps ending a window after it was found, not after it landed."""
    from llmguard._admission.ratelimit.window import Quota
    from llmguard.backends.redis import RedisBackend

    admin, backend = server.client(), RedisBackend(server.url, prefix="t")
    quotas = (Quota(30, 10.05, False, learn=True, margin=0.05),)
    found = server_time(admin)
    await while_stopped(server, backend.connection, lambda: backend.spent(None, quotas), held=1.0)
    state = backend._key(None)[1]
    assert admin.hget(state, "cap_r") == b"0"
    assert found + 10.05 <= float(admin.hget(state, "until_r")) < found + 10.8
    await backend.aclose()


async def test_a_reading_stale_before_redis_answers_is_dropped(server):
    """A reading is retried until a window has passed (a cap it sets, a bucket it drains,
    would be over by then): an outage's retries end, however long it lasts."""
    admin, connection = server.client(), Connection(server.url, "t", "local", 0.5)
    os.kill(server.proc.pid, signal.SIGSTOP)
    observing(connection, window=1.05)(3)
    await asyncio.wait_for(connection.kept(), 30)  # (the server still stopped)
    assert connection.errors >= 1
    os.kill(server.proc.pid, signal.SIGCONT)
    assert admin.hget(NAMES[1], "cap_r") is None
    await connection.aclose()


async def test_the_writes_kept_in_a_turn_are_one_task(server):
    """The writes kept within a loop turn (an answer's requests and tokens readings, a 429's
    pause and lesson) go in one task, in order, each retried in place after an outage (each
    was two tasks: its first attempt, and its retries); ``landed`` waits for their first
    attempts, and they land."""
    connection = Connection(server.url, "t", "local", 0.5)
    await connection.call("return 1", [], [], "connecting")  # (the pool's first connection)
    loop = asyncio.get_running_loop()
    made = []

    def counting(loop, coro, **kwargs):
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        first = _giveback.tell(connection, NAMES[3], True, "why")
        second = _giveback.tell(connection, "t:other", False, "why not")
        await connection.landed()
    finally:
        loop.set_task_factory(None)
    assert made == ["KeptWrites._keep"] and first is second and first.done()
    assert server.client().hget(NAMES[3], "gb") == b"1"
    assert server.client().hget("t:other", "gb") == b"0"
    await connection.aclose()


@pytest.mark.parametrize("on_error", ["local", "fail"])
async def test_writes_kept_in_a_turn_during_an_outage_cost_one_timeout_and_land(server, on_error):
    """Two writes kept in one turn while Redis is stopped: the first times out, the second is
    not tried while Redis is found down (one timeout before ``landed``, not one each); both
    land once it answers. With ``on_error="fail"`` too (Redis was never found down so: each
    write of the turn waited out its own timeout, one after the other)."""
    admin, connection = server.client(), Connection(server.url, "t", on_error, 0.5)
    os.kill(server.proc.pid, signal.SIGSTOP)
    _giveback.tell(connection, NAMES[3], True, "why")
    _giveback.tell(connection, "t:other", False, "why not")
    await connection.landed()  # (their first attempts: a retry comes after RETRY_INTERVAL)
    assert connection.errors == 1
    os.kill(server.proc.pid, signal.SIGCONT)
    await connection.kept()
    assert admin.hget(NAMES[3], "gb") == b"1" and admin.hget("t:other", "gb") == b"0"
    await connection.aclose()


async def test_landed_does_not_wait_for_a_kept_write_cancelled_before_it_ran():
    """A kept write cancelled before its first attempt (a loop closing) is not waited for."""
    connection = Connection("redis://127.0.0.1:1/0", "t", "local", 0.5)
    connection.keep("return 1", [], [], "nothing").cancel()
    await asyncio.wait_for(connection.landed(), 5)  # (it returns at once)
    assert not connection._trying
