"""Shared concurrency slots under cancellation, against the real Redis: a task cancelled at each
of its await points in turn (counted, not timed: ``cancel_points``) ends cancelled, holds no
slot here or in Redis, and a call waiting in another process gets the slot it gave back.

Real time (the leases live on the server clock): looptime is off. Each case runs on fresh
connections, so the points include connecting to Redis.
"""

import asyncio

import pytest
from cancel_points import outcome, run_cancelled_at, start_cancelled_at

import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter

pytestmark = pytest.mark.looptime(False)

#: A guard against a path that never ends, far above the points any case has.
MAX_POINTS = 300


def zcard(redis_url: str, key: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.zcard(key)
    finally:
        client.close()


def leases_in_redis(redis_url: str, prefix: str, name: str) -> int:
    return zcard(redis_url, f"{prefix}:cc:{{{name}}}")


async def answer(prompt: str) -> str:
    return prompt


async def test_a_cancel_whose_command_result_was_kept_below_is_raised_not_lost():
    """What redis-py's asyncio.wait_for did on Python 3.11 (CPython gh-86296): the caller is
    cancelled as the command completes and the layer below returns the result anyway.
    ``Connection.run`` raises the CancelledError instead of handing the result on."""
    from llmguard.backends.redis._client import Connection

    connection = Connection("redis://127.0.0.1:1/0", "p", "local", 5)
    started = asyncio.Event()

    async def command():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept"  # the swallowing library

    task = asyncio.create_task(connection.run(command, "testing"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_deployment_reservation_cancelled_at_any_await_point_holds_nothing(
        redis_url, redis_prefix):
    """``Deployment.reserve`` (a Router's routing decision: the shared slot's ACQUIRE, then the
    quota's RESERVE, each a Redis round trip) cancelled at each await point in turn: the
    cancellation is honoured (never lost in the Redis client), and neither this process
    (in_flight, claiming, slots held) nor Redis keeps a slot or a unit of the quota (a RESERVE
    cancelled while Redis ran it is refunded); past the last point it is granted, and given
    back (never sent) it leaves nothing either."""
    for n in range(MAX_POINTS):
        backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=5)
        router = lg.Router(lg.Deployment(answer, name="a", rpm=10_000, concurrency=1),
                           backend=backend)
        deployment = router.deployments[0]
        now = asyncio.get_running_loop().time()
        point, outcome = await run_cancelled_at(n, lambda: deployment.reserve(1, now))
        if point.reached:
            assert isinstance(outcome, asyncio.CancelledError), (n, outcome)
        else:
            wait, ticket = outcome
            assert wait == 0.0 and ticket is not None
            assert (deployment.in_flight, deployment.slots.held) == (1, 1)
            deployment.release(ticket, 1, False)
        assert (deployment.in_flight, deployment.claiming, deployment.slots.held) == (0, 0, 0)
        await backend.aclose()  # waits for the background releases
        assert leases_in_redis(redis_url, redis_prefix, "deployment:a") == 0, n
        assert zcard(redis_url, f"{redis_prefix}:rl:{{s:deployment:a}}:log") == 0, n
        if not point.reached:
            break
    assert n >= 2  # it had points to cancel at: connecting, ACQUIRE, RESERVE


async def test_a_shared_limiter_acquire_cancelled_at_any_await_point_holds_nothing(
        redis_url, redis_prefix):
    """``RedisConcurrencyLimiter.acquire`` runs the ACQUIRE in the caller's task, so a cancel
    lands inside the Redis round trip itself: at each await point in turn the caller ends
    cancelled and no permit stays held (here or in Redis); past the last it holds one."""
    for n in range(MAX_POINTS):
        backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=5)
        limiter = RedisConcurrencyLimiter(backend, 1, name="c", lease=5)
        point, outcome = await run_cancelled_at(n, limiter.acquire)
        if point.reached:
            assert isinstance(outcome, asyncio.CancelledError), (n, outcome)
        else:
            assert limiter.in_flight == 1
            limiter.release()
        assert (limiter.in_flight, limiter.statistics().in_flight) == (0, 0)
        await backend.aclose()
        assert leases_in_redis(redis_url, redis_prefix, "c") == 0, n
        if not point.reached:
            break
    assert n >= 2


async def test_a_router_call_cancelled_at_any_await_point_frees_the_slot_for_another_process(
        redis_url, redis_prefix):
    """Deployment "a" (concurrency=1) shared by two routers on two connections, as two
    processes. The victim (first router) is cancelled at each of its await points in turn:
    waiting in line while the other process holds the slot, inside the provider before and
    after a call of the other process starts waiting for that slot. Whatever the point, it
    ends cancelled, nothing of it stays held, and the other process's waiting call gets the
    slot and answers (the freed slot is found by polling: nobody announces it)."""
    async with asyncio.timeout(600):  # a hang fails here instead of holding the suite
        for n in range(MAX_POINTS):
            if not await _victim_case(redis_url, redis_prefix, n):
                break
        assert n >= 3  # in line, and both waits in the provider


async def _victim_case(redis_url: str, prefix: str, n: int) -> bool:
    """One case: the victim cancelled at point ``n``; True when point ``n`` was reached."""
    holder_may_end, other_waits = asyncio.Event(), asyncio.Event()
    sending = asyncio.Event()

    async def send(prompt):
        if prompt == "holder":
            sending.set()
            await holder_may_end.wait()
        elif prompt == "victim":
            sending.set()
            await other_waits.wait()  # cancelled here: nobody waits for the slot yet
            await asyncio.sleep(0.05)  # cancelled here: the other process waits for it
        return prompt

    backends = [RedisBackend(redis_url, prefix=prefix, timeout=5) for _ in range(2)]
    routers = [lg.Router(lg.Deployment(send, name="a", rpm=10_000, concurrency=1), backend=b)
               for b in backends]
    first, second = (lg.guard(r)(send) for r in routers)

    holder = asyncio.create_task(second("holder"))  # the other process holds the slot
    await sending.wait()
    sending.clear()
    point, victim = start_cancelled_at(n, lambda: first("victim"))
    await asyncio.sleep(0.05)  # the victim waits in line meanwhile (its router polls Redis)
    holder_may_end.set()  # the other process's call ends: the slot is free in Redis
    await _either(sending, victim)  # the victim found it and is sending, or was cancelled
    other = asyncio.create_task(second("other"))
    await _until(lambda: victim.done() or other.done() or routers[1].statistics().waiting)
    other_waits.set()

    ended = await outcome(victim)
    if point.reached:
        assert isinstance(ended, asyncio.CancelledError), (n, ended)
    else:
        assert ended == "victim"
    assert await other == "other"  # got the slot the victim gave back, whatever the point
    assert await holder == "holder"
    for router in routers:
        deployment = router.deployments[0]
        assert (deployment.in_flight, deployment.claiming, deployment.slots.held) == (0, 0, 0)
        assert router.statistics().waiting == 0
    for backend in backends:
        await backend.aclose()  # waits for the background releases
    assert leases_in_redis(redis_url, prefix, "deployment:a") == 0, n
    return point.reached


async def _either(event: asyncio.Event, task: asyncio.Task) -> None:
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


async def _until(condition) -> None:
    for _ in range(2000):  # a guard against a hang, never asserted on
        if condition():
            return
        await asyncio.sleep(0.005)
