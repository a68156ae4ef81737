"""Router with the Redis backend: processes route against the same per-deployment quotas.

Real time (the server clock is the quota's clock): looptime is off, waits are short and bounded
generously (a loaded machine must pass).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, collections, sys, llmguard as lg
from llmguard.backends.redis import RedisBackend

async def main(url, prefix):
    backend = RedisBackend(url, prefix=prefix, timeout=5)
    sent = collections.Counter()

    def deployment(name, rpm):
        async def send(i):
            sent[name] += 1
            return name
        return lg.Deployment(send, name=name, rpm=rpm)

    router = lg.Router(deployment("a", 5), deployment("b", 10), max_wait=3, backend=backend)
    guarded = lg.guard(router)(deployment("base", 1).target)
    results = await asyncio.gather(*(guarded(i) for i in range(20)), return_exceptions=True)
    await backend.aclose()
    timed_out = sum(isinstance(r, lg.AdmissionTimeout) for r in results)
    print(sent["a"], sent["b"], timed_out, router.statistics().in_flight)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_two_processes_route_against_the_same_deployment_quotas(redis_url, redis_prefix):
    """Two processes, 20 calls each, over deployments of 5 and 10 RPM shared in Redis: exactly
    5 calls reach the first and 10 the second in all (each whole quota, never more); the other
    25 time out waiting for room."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_url, redis_prefix], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert sum(c[0] for c in counts) == 5
    assert sum(c[1] for c in counts) == 10
    assert sum(c[2] for c in counts) == 25
    assert all(c[3] == 0 for c in counts)


async def test_a_429_in_one_process_cools_the_deployment_down_in_all(redis_url, redis_prefix):
    """A deployment's 429 pause lives in Redis: another router (as another process would) with
    the same deployment name sends nothing there until the pause is over."""
    import asyncio

    import llmguard as lg
    from llmguard.backends.redis import RedisBackend
    from llmguard.testing import FakeLLM, make_error

    def router(llm_a, llm_b):
        backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=5)
        return backend, lg.Router(lg.Deployment(llm_a.send_message, name="a", rpm=100),
                                  lg.Deployment(llm_b.send_message, name="b", rpm=100),
                                  strategy="ordered", backend=backend)

    limited = FakeLLM([make_error(lg.FailureKind.RATE_LIMITED, retry_after=30)])
    backend1, first = router(limited, FakeLLM())
    await lg.guard(first)(limited.send_message)("hi")  # 429 at a, answered by b
    a2, b2 = FakeLLM(), FakeLLM()
    backend2, second = router(a2, b2)
    await asyncio.sleep(0.2)  # the pause is written in the background
    await lg.guard(second)(a2.send_message)("hi")
    assert (a2.call_count, b2.call_count) == (0, 1)
    assert second.statistics().deployments["a"].cooling_for > 25
    await backend1.aclose()
    await backend2.aclose()


SLOTS_WORKER = """
import asyncio, sys, llmguard as lg
from llmguard.backends.redis import RedisBackend

async def main(url, prefix, port):
    backend = RedisBackend(url, prefix=prefix, timeout=5)

    def deployment(name, concurrency):
        async def send(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(name.encode() + b"\\n")
            await reader.readline()
            writer.close()
            return name
        return lg.Deployment(send, name=name, rpm=10_000, concurrency=concurrency)

    router = lg.Router(deployment("a", 2), deployment("b", 1), max_wait=60, backend=backend)
    guarded = lg.guard(router)(deployment("base", 1).target)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    results = await asyncio.gather(*(guarded(i) for i in range(6)))
    held = sum(d.slots.held for d in router.deployments)
    await backend.aclose()
    print(len(results), held, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_share_each_deployments_concurrency(redis_url, redis_prefix):
    """Two processes, 6 calls each, over deployments with concurrency 2 and 1 shared in Redis:
    the provider never sees more than 2 calls at the first or 1 at the second at once (counted
    where they arrive), though each process alone would allow that many; every call is done (a
    slot freed in one process is found by the other's polling) and no slot stays held."""
    import asyncio

    inside, peak, done = {"a": 0, "b": 0}, {"a": 0, "b": 0}, []

    async def serve(reader, writer):
        name = (await reader.readline()).decode().strip()
        inside[name] += 1
        peak[name] = max(peak[name], inside[name])
        try:
            await asyncio.sleep(0.1)
        finally:
            inside[name] -= 1
        done.append(name)
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = str(tcp.sockets[0].getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SLOTS_WORKER, redis_url, redis_prefix, port],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]

    async def line(proc):
        return (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)).strip()

    try:
        assert [await line(p) for p in procs] == ["ready", "ready"]
        for proc in procs:  # both start together, so they contend for the slots
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = [await line(p) for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        tcp.close()
    assert outcomes == ["6 0", "6 0"]
    assert len(done) == 12
    assert peak == {"a": 2, "b": 1}


async def test_cancelled_calls_give_their_shared_slot_back(redis_url, redis_prefix):
    """Deployment "a" (concurrency=1) routed by two routers on two connections, as two
    processes: a call waiting in one router's line while the other holds the slot, and the
    holder's call in flight, are cancelled; neither keeps a slot (here or in Redis), and a call
    waiting in the first router gets the slot freed by the other's cancellation. (It hung, 2 runs
    in 5 under xdist: aclose() waited for a circuit poller whose cancellation redis-py had
    dropped; see Connection.redis. Every await point: test_redis_slot_cancellation.)"""
    import asyncio

    async with asyncio.timeout(120):  # a hang fails here instead of holding the suite
        await _cancelled_calls_give_their_shared_slot_back(redis_url, redis_prefix)


async def _cancelled_calls_give_their_shared_slot_back(redis_url, redis_prefix):
    import asyncio

    import llmguard as lg
    from llmguard.backends.redis import RedisBackend

    gate = asyncio.Event()

    async def send(prompt):
        await gate.wait()
        return prompt

    backends = [RedisBackend(redis_url, prefix=redis_prefix, timeout=5) for _ in range(2)]
    routers = [lg.Router(lg.Deployment(send, name="a", rpm=10_000, concurrency=1), backend=b)
               for b in backends]
    first, second = (lg.guard(r)(send) for r in routers)
    a1, a2 = (r.deployments[0] for r in routers)

    async def until(condition):
        for _ in range(1000):  # bounded guard against a hang, never asserted on
            if condition():
                return
            await asyncio.sleep(0.01)

    holder = asyncio.create_task(first("held"))
    await until(lambda: a1.in_flight == 1)  # granted (its slot held, then its quota)
    waiter = asyncio.create_task(second("waits"))
    await asyncio.sleep(0.3)  # it polls Redis meanwhile: the slot is taken
    assert routers[1].statistics().waiting == 1 and a2.in_flight == 0 and a2.slots.held == 0
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert routers[1].statistics().waiting == 0 and a2.slots.held == 0

    taker = asyncio.create_task(second("taken"))
    await asyncio.sleep(0.1)
    holder.cancel()  # in flight: its slot goes back, in this process and in Redis
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert a1.in_flight == 0 and a1.slots.held == 0
    await until(lambda: a2.in_flight == 1)  # granted: the slot, then the quota
    assert a2.slots.held == 1  # the other router's waiting call found the freed slot
    gate.set()
    assert await taker == "taken"
    assert a2.slots.held == 0 and a2.in_flight == 0
    for backend in backends:
        await backend.aclose()  # waits for the background releases
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{redis_prefix}:cc:{{deployment:a}}") == 0
    client.close()
