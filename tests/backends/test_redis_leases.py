"""Concurrency leases when Redis restarts, fails over or is slow (issue 21 #2, #3).

Each test runs its own redis-server on a free port (tests/backends/redis_server.py) and
restarts, stops or puts it to sleep (``DEBUG SLEEP``) under load; the limit is counted where the
calls arrive (a fake provider over TCP in the test process, shared by every worker process).
Real time: looptime is off; every wait is bounded by a max_wait, the backend's timeout or a
generous guard against hangs (never asserted on).
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import Server

import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, _client

pytestmark = [
    pytest.mark.looptime(False),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
LEASES, FENCE, GONE = "t:cc:{api}", "t:cc:{api}:run", "t:cc:{api}:gone"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(_client, "RETRY_INTERVAL", 0.05)  # retry Redis soon after a failure
    server = Server(None, "--enable-debug-command", "yes")
    server.start()
    yield server
    server.stop()


class Provider:
    """The fake provider every worker calls over TCP: it counts the calls inside it at once."""

    def __init__(self, hold: float) -> None:
        self.hold, self.inside, self.peak, self.done = hold, 0, 0, 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.inside -= 1
        self.done += 1
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()


WORKER = """
import asyncio, json, sys
import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter

async def call(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"call\\n")
    assert await reader.readline() == b"ok\\n"
    writer.close()

async def main(url, port, seconds):
    backend = RedisBackend(url, prefix="t", on_error="fail", timeout=2.0)
    limiter = RedisConcurrencyLimiter(backend, 2, name="api", lease=1.0)
    counts = {"ok": 0, "unavailable": 0}
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def caller():
        while loop.time() < end:
            try:
                await limiter.acquire()
            except lg.BackendUnavailable:
                counts["unavailable"] += 1
                await asyncio.sleep(0.02)
                continue
            try:
                await call(port)
                counts["ok"] += 1
            finally:
                limiter.release()

    await asyncio.gather(*(caller() for _ in range(3)))
    await backend.aclose()
    print(json.dumps(counts), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


async def _line(proc: subprocess.Popen) -> str:
    return (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)).strip()


async def test_a_redis_restart_under_load_never_lets_more_than_the_limit_in(server):
    """Two worker processes (three callers each, limit 2, lease 1 s, calls of 0.5 s) while
    their Redis is killed and restarted empty: the provider never sees more than 2 calls at
    once (the restarted server grants nothing for a lease while the running calls' renewals put
    their leases back), and calls are admitted again after the restart."""
    provider = Provider(hold=0.5)
    tcp = await asyncio.start_server(provider.serve, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, server.url, str(port), "5"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        assert [await _line(p) for p in procs] == ["ready", "ready"]
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for _ in range(400):  # bounded guard: the workers are running once calls complete
            if provider.done >= 4 and provider.inside == 2:
                break
            await asyncio.sleep(0.01)
        server.stop()  # two leases held, callers of both processes waiting
        server.start()
        restarted_at = provider.done
        counts = [json.loads(await _line(p)) for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        tcp.close()
    assert provider.peak == 2
    assert provider.done >= restarted_at + 4, (restarted_at, provider.done)
    assert all(c["ok"] > 0 for c in counts), counts


@pytest.mark.parametrize("gives_up", ["on_error_local", "on_error_fail", "cancelled"])
async def test_a_lease_granted_after_its_caller_gave_up_is_released(server, gives_up):
    """Redis is asleep (DEBUG SLEEP) while ACQUIRE is sent; the caller gives up (granted
    locally with on_error="local", BackendUnavailable with "fail", or cancelled); the script
    runs when Redis wakes. The lease it grants is released as soon as Redis answers (a
    tombstone keeps it from being granted late), so another process gets the only slot long
    before the 2.5 s lease would have expired."""
    # the caller's timeout well under the sleep, and both long enough for a loaded machine
    timeout = 10.0 if gives_up == "cancelled" else 1.0
    backend = RedisBackend(server.url, prefix="t", timeout=timeout,
                           on_error="local" if gives_up == "on_error_local" else "fail")
    a = RedisConcurrencyLimiter(backend, 1, name="api", lease=2.5)
    await a.acquire()  # warm: the script is loaded and a connection open
    a.release()
    admin = server.client(socket_timeout=10)
    for _ in range(100):  # bounded: the release is written in the background
        if admin.zcard(LEASES) == 0:
            break
        await asyncio.sleep(0.01)
    sleeper = asyncio.create_task(asyncio.to_thread(admin.execute_command, "DEBUG", "SLEEP", 3.0))
    await asyncio.sleep(0.3)  # Redis is asleep now
    abandoned = f"{backend.connection.id}.2"  # the lease id of the next acquire
    if gives_up == "on_error_local":
        await a.acquire()  # gave up on Redis after 1 s, granted by the local limiter
        assert a.in_flight == 1
        await asyncio.sleep(0.1)
        a.release()  # Redis still asleep: the release is retried
    elif gives_up == "on_error_fail":
        with pytest.raises(lg.BackendUnavailable):
            await a.acquire()
    else:
        waiter = asyncio.create_task(a.acquire())
        await asyncio.sleep(0.2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert a.in_flight == 0
    await sleeper  # Redis wakes and runs the late ACQUIRE
    other_backend = RedisBackend(server.url, prefix="t", on_error="fail")
    other = RedisConcurrencyLimiter(other_backend, 1, name="api", lease=2.5, max_wait=1.5)
    await other.acquire()  # AdmissionTimeout if a lease nobody holds kept the slot
    assert admin.zcard(LEASES) == 1  # other's
    assert admin.zscore(GONE, abandoned) is not None  # a late grant of it stays a no-op
    assert admin.pttl(GONE) > 0
    other.release()
    await backend.aclose()
    await other_backend.aclose()
    admin.close()


class Proxy:
    """A TCP proxy in front of the server. ``hold()`` holds back (never drops) what the
    connections open at that moment send, until ``let_go()``; newer connections pass at once:
    a command sent first then reaches Redis after one sent later (a slow network path)."""

    def __init__(self, target: int) -> None:
        self.target, self.gates, self.tcp, self.port = target, [], None, 0

    async def start(self) -> None:
        self.tcp = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.tcp.sockets[0].getsockname()[1]

    def hold(self) -> None:
        for gate in self.gates:
            gate.clear()

    def let_go(self) -> None:
        for gate in self.gates:
            gate.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        gate = asyncio.Event()
        gate.set()
        self.gates.append(gate)

        async def pipe(source, sink, gate=None):
            while data := await source.read(65536):
                if gate is not None:
                    await gate.wait()
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, gate), pipe(up_reader, writer),
                             return_exceptions=True)


async def test_a_release_overtaking_a_renewal_is_not_undone_by_it(server):
    """A renewal (which puts back leases Redis lost) is held up on its way to Redis; the call
    ends and its release, sent later on another connection, reaches Redis first. The late
    renewal does not put the released lease back (the release left a tombstone)."""
    proxy = Proxy(server.port)
    await proxy.start()
    backend = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", prefix="t", on_error="fail",
                           timeout=5.0)
    a = RedisConcurrencyLimiter(backend, 1, name="api", lease=2.5)
    await a.acquire()  # renewed every 0.83 s from now
    assert len(proxy.gates) == 1  # one connection so far: the renewal will take it
    proxy.hold()
    await asyncio.sleep(1.2)  # the renewal went out at 0.83 s and is held back
    a.release()  # on a new connection: Redis runs it at once
    admin = server.client()
    for _ in range(200):  # bounded: the release is written in the background
        if admin.zcard(LEASES) == 0:
            break
        await asyncio.sleep(0.01)
    assert admin.zcard(LEASES) == 0 and len(proxy.gates) == 2
    proxy.let_go()
    for _ in range(200):  # bounded: the renewal's answer
        if admin.zcard(LEASES) or not backend.connection.loops:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert admin.zcard(LEASES) == 0  # not put back by the late renewal
    await backend.aclose()
    proxy.tcp.close()
    admin.close()


async def test_permits_granted_locally_during_an_outage_count_once_redis_is_back(server):
    """With on_error="local", two permits granted by the local limiter while Redis is down are
    registered in Redis once it answers: another process stays refused (past the restart
    fence) until they are released."""
    local = RedisBackend(server.url, prefix="t", on_error="local", timeout=5.0)
    a = RedisConcurrencyLimiter(local, 2, name="api", lease=0.6)
    strict = RedisBackend(server.url, prefix="t", on_error="fail", timeout=5.0)
    b = RedisConcurrencyLimiter(strict, 2, name="api", lease=0.6, max_wait=1.5)
    await b.acquire()  # both processes have used this Redis before it restarts
    b.release()
    server.stop()
    await a.acquire()
    await a.acquire()
    server.start()
    with pytest.raises(lg.AdmissionTimeout):
        await b.acquire()  # 1.5 s: over twice the fence; a's two calls hold the limit
    admin = server.client()
    assert admin.zcard(LEASES) == 2
    a.release()
    await b.acquire()
    assert (a.in_flight, b.in_flight) == (1, 1)
    a.release()
    b.release()
    await local.aclose()
    await strict.aclose()
    admin.close()


async def test_leases_written_by_another_server_instance_fence_new_grants(redis_url):
    """Leases restored from disk or a replica (the fence names another instance's run_id) may
    miss calls still running: nothing is granted for a lease, then grants resume."""
    import redis

    prefix = f"t{os.getpid()}{id(redis_url)}"
    admin = redis.Redis.from_url(redis_url)
    backend = RedisBackend(redis_url, prefix=prefix, on_error="fail")
    a = RedisConcurrencyLimiter(backend, 2, name="api", lease=1.0, max_wait=0.3)
    await a.acquire()  # the shared server has been up for long: no fence
    a.release()
    fence = f"{prefix}:cc:{{api}}:run"
    assert admin.hget(fence, "run") == admin.info("server")["run_id"].encode()
    admin.hset(fence, "run", "another-instance")
    with pytest.raises(lg.AdmissionTimeout, match="Redis restart"):
        await a.acquire()
    a.max_wait = 3.0
    await a.acquire()
    a.release()
    await backend.aclose()
    admin.delete(*admin.keys(f"{prefix}:*"))
    admin.close()


async def test_without_info_a_fresh_server_grants_at_once_and_a_restart_is_fenced(server):
    """Where an ACL forbids INFO, the markers still tell a fresh deployment (first permit at
    once: it waited a whole lease, 10 s by default, on every deploy) from a restart seen by a
    running process (nothing granted for a lease); an idle period longer than twice the lease
    does not fence again (it did, every time the fence record expired)."""
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-info")
    url = f"redis://app:pw@127.0.0.1:{server.port}/0"
    backend = RedisBackend(url, prefix="t", on_error="fail", timeout=5.0)
    a = RedisConcurrencyLimiter(backend, 2, name="api", lease=1.0, max_wait=0.3)
    await a.acquire()  # a fresh deployment: no wait
    a.release()
    await asyncio.sleep(3.0)  # idle for three leases: the old fence record expired here
    await a.acquire()
    a.release()
    admin.execute_command("FLUSHALL")  # what a restart without persistence leaves
    with pytest.raises(lg.AdmissionTimeout, match="Redis restart"):
        await a.acquire()
    a.max_wait = 3.0
    await a.acquire()  # after a lease
    a.release()
    await backend.aclose()
    admin.close()
