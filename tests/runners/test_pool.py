"""AgentPool: per-member limits, fair waiting, return on error/cancel, strategies, cooldown."""

from __future__ import annotations

import asyncio

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg


class Agent:
    def __init__(self, name: str, delay: float = 1.0, fail: bool = False) -> None:
        self.name, self.delay, self.fail = name, delay, fail
        self.active = self.peak = 0
        self.closed = False

    async def send_message(self, text: str) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise ConnectionError(f"{self.name} down")
            return f"{self.name}:{text}"
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        self.closed = True


def busy(pool: lg.AgentPool) -> list[int]:
    return [m.busy for m in pool.statistics().members]


async def test_per_member_limit_and_all_calls_served() -> None:
    """No member ever runs more than per_member calls; every call gets an answer."""
    agents = [Agent("a"), Agent("b")]
    pool = lg.AgentPool(agents, per_member=2)
    results = await asyncio.gather(*(pool.send_message(str(i)) for i in range(20)))
    assert len(results) == 20 and all(a.peak <= 2 for a in agents)
    assert busy(pool) == [0, 0] and pool.statistics().waiting == 0


async def test_waiters_are_served_in_arrival_order() -> None:
    """With every member busy, callers are served first-in first-out."""
    pool = lg.AgentPool([Agent("a")])
    order: list[int] = []

    async def call(i: int) -> None:
        await pool.send_message(str(i))
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.ensure_future(call(i)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_member_returned_on_error_and_on_cancellation() -> None:
    """A failing call and a cancelled call (running or waiting) give the slot back; the next call proceeds."""
    pool = lg.AgentPool([Agent("a", fail=True)], cooldown=5)
    with pytest.raises(ConnectionError):
        await pool.send_message("x")
    assert busy(pool) == [0]
    ok = lg.AgentPool([Agent("b", delay=10)])
    running = asyncio.ensure_future(ok.send_message("1"))
    waiting = asyncio.ensure_future(ok.send_message("2"))
    await asyncio.sleep(1)
    assert ok.statistics().waiting == 1
    waiting.cancel()
    running.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert busy(ok) == [0] and ok.statistics().waiting == 0
    assert await ok.send_message("3") == "b:3"


async def test_granted_then_cancelled_waiter_passes_member_on() -> None:
    """A waiter cancelled right after being handed a member gives it to the next waiter."""
    pool = lg.AgentPool([Agent("a", delay=1)])
    first = asyncio.ensure_future(pool.send_message("1"))
    second = asyncio.ensure_future(pool.send_message("2"))
    third = asyncio.ensure_future(pool.send_message("3"))
    await asyncio.sleep(0.5)
    await first  # releases: second is granted but has not run yet
    second.cancel()
    assert await third == "a:3"
    assert busy(pool) == [0]


async def test_round_robin_and_weighted_spread() -> None:
    """round_robin alternates; weighted spreads calls in proportion to the weights."""
    agents = [Agent("a", 0), Agent("b", 0)]
    rr = lg.AgentPool(agents, strategy="round_robin")
    assert [await rr.send_message("") for _ in range(4)] == ["a:", "b:", "a:", "b:"]
    w = lg.AgentPool(agents, strategy="weighted", weights=[3, 1])
    got = [await w.send_message("") for _ in range(8)]
    assert got.count("a:") == 6 and got.count("b:") == 2


async def test_failing_member_cools_down_and_returns_after_probe() -> None:
    """A member that keeps failing is skipped during cooldown, then one probe brings it back."""
    bad, good = Agent("bad", 0, fail=True), Agent("good", 0)
    pool = lg.AgentPool([bad, good], strategy="round_robin", cooldown=10)
    for _ in range(6):
        try:
            await pool.send_message("")
        except ConnectionError:
            pass
    assert pool.statistics().members[0].state == "open"
    assert {await pool.send_message("") for _ in range(4)} == {"good:"}
    bad.fail = False
    await asyncio.sleep(10)
    assert "bad:" in {await pool.send_message("") for _ in range(4)}
    assert pool.statistics().members[0].state == "closed"


async def test_all_members_cooling_fails_fast() -> None:
    """When every member is cooling down, a call raises CircuitOpenError saying when to retry."""
    pool = lg.AgentPool([Agent("a", 0, fail=True)], cooldown=10)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await pool.send_message("")
    with pytest.raises(lg.CircuitOpenError, match="cooling down"):
        await pool.send_message("")


async def test_guardable_coroutine_members_and_close() -> None:
    """Plain coroutine functions are members; pool.send_message wraps in a Pipeline; async with closes."""

    async def echo(text: str) -> str:
        return text

    guarded = lg.Pipeline().retry(attempts=2).wrap(lg.AgentPool([echo, echo]).send_message)
    assert await guarded("hi") == "hi"
    agent = Agent("a")
    async with lg.AgentPool([agent]) as pool:
        await pool.send_message("x")
    assert agent.closed


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ([], {}, "members must not be empty"),
        ([1], {}, "members\\[0\\]"),
        ([len], {"per_member": 0}, "per_member"),
        ([len], {"strategy": "random"}, "strategy must be one of"),
        ([len], {"weights": [1]}, "weights only apply"),
        ([len, len], {"strategy": "weighted", "weights": [1]}, "weights must be"),
        ([len], {"strategy": "weighted", "weights": [0]}, "weights must be"),
        ([len], {"cooldown": -1}, "cooldown"),
    ],
)
def test_bad_arguments(args, kwargs, match) -> None:
    """Bad construction arguments raise an error naming the argument."""
    with pytest.raises((ValueError, TypeError), match=match):
        lg.AgentPool(args, **kwargs)


async def test_queued_caller_cancelled_just_before_a_new_caller_ends_cancelled() -> None:
    """Issue 21 #8: a queued caller cancelled just before another caller arrives ends with
    ``CancelledError`` (it ended with ``ValueError: <Future cancelled> is not in deque``), and
    the newcomer is served once the member is free."""
    agent = Agent("a")
    pool = lg.AgentPool([agent])
    holder = asyncio.create_task(pool.send_message("first"))
    await asyncio.sleep(0)
    queued = asyncio.create_task(pool.send_message("queued"))
    await asyncio.sleep(0)
    newcomer = asyncio.create_task(pool.send_message("new"))  # runs before `queued` resumes
    queued.cancel()
    await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await holder and await newcomer
    stats = pool.statistics()
    assert stats.waiting == 0 and all(m.busy == 0 for m in stats.members) and not pool._waiters


@settings(max_examples=40, deadline=None)
@given(calls=st.lists(st.tuples(st.floats(0, 3), st.one_of(st.none(), st.floats(0, 3))),
                      min_size=1, max_size=12),
       per_member=st.integers(1, 2))
def test_any_cancellation_pattern_ends_each_caller_cleanly(calls, per_member) -> None:
    """Property: callers arriving and being cancelled at any instants each end with their answer
    or ``CancelledError`` (never another error), no member serves more than ``per_member`` at
    once, and the pool ends with nobody waiting and every member free."""
    async def scenario() -> None:
        agents = [Agent("a"), Agent("b")]
        pool = lg.AgentPool(agents, per_member=per_member)

        async def caller(arrive, cancel_after):
            await asyncio.sleep(arrive)
            task = asyncio.ensure_future(pool.send_message("x"))
            if cancel_after is not None:
                asyncio.get_running_loop().call_later(cancel_after, task.cancel)
            return await task

        results = await asyncio.gather(*(caller(*c) for c in calls), return_exceptions=True)
        for result in results:
            assert isinstance(result, (str, asyncio.CancelledError)), result
        stats = pool.statistics()
        assert stats.waiting == 0 and all(m.busy == 0 for m in stats.members)
        assert all(a.peak <= per_member for a in agents)

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
