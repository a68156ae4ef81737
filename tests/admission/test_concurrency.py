"""ConcurrencyLimiter and the ConcurrencyLimit layer: limits, order, fairness, resizing, errors,
cancellation at every await point."""

import asyncio

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard import ConcurrencyLimit
from llmguard.backends import ConcurrencyLimiter, Limiter


def baseline(limiter: ConcurrencyLimiter) -> tuple[int, int, dict]:
    stats = limiter.statistics()
    return stats.in_flight, stats.waiting, dict(stats.waiting_by_priority)


async def hold(limiter: ConcurrencyLimiter, order: list, name, seconds=1.0, **kw) -> None:
    await limiter.acquire(**kw)
    order.append(name)
    try:
        await asyncio.sleep(seconds)
    finally:
        limiter.release()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (1.5, ValueError),
                                        ("3", TypeError), (None, TypeError), (True, TypeError)])
def test_bad_limit_is_rejected_with_a_clear_error(bad, error) -> None:
    """A limit that is not a positive integer fails at construction, naming the argument: a
    number that does not fit is a ValueError, anything else (bool included) a TypeError."""
    with pytest.raises(error, match="limit must be a positive integer"):
        ConcurrencyLimiter(bad)


def test_bad_bounds_are_rejected() -> None:
    """max_queue and max_wait must be positive; callables must be callable."""
    with pytest.raises(ValueError, match="max_queue"):
        ConcurrencyLimiter(1, max_queue=0)
    with pytest.raises(ValueError, match="max_wait"):
        ConcurrencyLimiter(1, max_wait=float("nan"))
    with pytest.raises(TypeError, match="priority"):
        ConcurrencyLimit(1, priority=3)


async def test_fifo_within_a_priority_class() -> None:
    """Waiters of one class and key are admitted in arrival order."""
    limiter = ConcurrencyLimiter(1)
    order: list = []
    tasks = [asyncio.create_task(hold(limiter, order, i)) for i in range(5)]
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_higher_priority_first() -> None:
    """When a slot frees, the highest waiting priority class is served first."""
    limiter = ConcurrencyLimiter(1)
    order: list = []
    first = asyncio.create_task(hold(limiter, order, "first"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(hold(limiter, order, p, priority=p)) for p in (0, 5, 1, 5)]
    await asyncio.sleep(0)
    assert limiter.statistics().waiting_by_priority == {5: 2, 1: 1, 0: 1}
    await asyncio.gather(first, *tasks)
    assert order == ["first", 5, 5, 1, 0]


async def test_keys_are_served_round_robin() -> None:
    """A key with many queued calls cannot starve another key: waiting keys alternate."""
    limiter = ConcurrencyLimiter(1)
    order: list = []
    first = asyncio.create_task(hold(limiter, order, "first"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(hold(limiter, order, f"a{i}", partition="a")) for i in range(4)]
    tasks += [asyncio.create_task(hold(limiter, order, f"b{i}", partition="b")) for i in range(2)]
    await asyncio.gather(first, *tasks)
    assert order == ["first", "a0", "b0", "a1", "b1", "a2", "a3"]


async def test_growing_the_limit_admits_waiters_at_once() -> None:
    """Raising the limit wakes waiters immediately."""
    limiter = ConcurrencyLimiter(1)
    order: list = []
    tasks = [asyncio.create_task(hold(limiter, order, i, seconds=10)) for i in range(4)]
    await asyncio.sleep(0)
    assert limiter.in_flight == 1 and limiter.waiting == 3
    limiter.limit = 4
    await asyncio.sleep(0)
    assert limiter.in_flight == 4 and limiter.waiting == 0
    await asyncio.gather(*tasks)


async def test_shrinking_lets_in_flight_finish_and_admits_no_more() -> None:
    """Lowering the limit keeps running holders; nobody new enters until below the new limit."""
    limiter = ConcurrencyLimiter(3)
    order: list = []
    tasks = [asyncio.create_task(hold(limiter, order, i, seconds=1)) for i in range(5)]
    await asyncio.sleep(0)
    limiter.limit = 1
    assert limiter.in_flight == 3
    await asyncio.sleep(1.5)  # all three finished; only one of the two waiters may enter
    assert limiter.in_flight == 1 and limiter.waiting == 1
    await asyncio.gather(*tasks)
    assert baseline(limiter) == (0, 0, {})


async def test_queue_full_rejects_at_once_with_a_clear_error() -> None:
    """Beyond max_queue waiters a call fails at once with QueueFull naming what to change."""
    limiter = ConcurrencyLimiter(1, max_queue=1)
    order: list = []
    tasks = [asyncio.create_task(hold(limiter, order, i)) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(lg.QueueFull, match="max_queue=1.*raise max_queue or limit"):
        await limiter.acquire()
    await asyncio.gather(*tasks)
    assert limiter.statistics().rejected == 1


async def test_max_wait_raises_admission_timeout_and_cleans_up() -> None:
    """Waiting longer than max_wait raises AdmissionTimeout; the waiter leaves the queue."""
    limiter = ConcurrencyLimiter(1, max_wait=2)
    order: list = []
    task = asyncio.create_task(hold(limiter, order, "holder", seconds=10))
    await asyncio.sleep(0)
    with pytest.raises(lg.AdmissionTimeout, match="waited 2 s.*raise max_wait or limit"):
        await limiter.acquire()
    assert limiter.statistics().timed_out == 1 and limiter.waiting == 0
    await task
    assert baseline(limiter) == (0, 0, {})


async def test_callers_own_cancellation_stays_a_cancellation() -> None:
    """Cancelling a waiter under max_wait raises CancelledError, not AdmissionTimeout."""
    limiter = ConcurrencyLimiter(1, max_wait=100)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.statistics().timed_out == 0 and limiter.waiting == 0
    limiter.release()


async def test_cancelled_while_waiting_leaks_nothing() -> None:
    """A waiter cancelled in the queue is removed; the next waiter still gets the slot."""
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    doomed = asyncio.create_task(limiter.acquire(priority=3, partition="x"))
    survivor = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    assert baseline(limiter) == (1, 1, {0: 1})
    limiter.release()
    await survivor
    limiter.release()
    assert baseline(limiter) == (0, 0, {})


async def test_waiters_that_give_up_leave_no_queue_behind() -> None:
    """Thousands of waiters, each of its own partition (tenant), time out or are cancelled
    while the slot is held and nobody else waits: no queue per partition is kept for them, and
    the next waiters are served in order as before."""
    limiter = ConcurrencyLimiter(1, max_wait=1.0)
    await limiter.acquire()
    for i in range(2000):
        if i % 2:
            with pytest.raises(lg.AdmissionTimeout):
                await limiter.acquire(priority=i % 3, partition=f"tenant{i}")
        else:
            waiter = asyncio.create_task(limiter.acquire(partition=f"tenant{i}"))
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
    assert not limiter._queue and baseline(limiter) == (1, 0, {})
    order: list = []
    tasks = [asyncio.create_task(hold(limiter, order, name, 0.1, partition=name)) for name in "ab"]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == ["a", "b"] and baseline(limiter) == (0, 0, {})


async def test_cancelled_after_grant_passes_the_permit_on() -> None:
    """A waiter granted a permit but cancelled before resuming gives it to the next waiter."""
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    granted = asyncio.create_task(limiter.acquire())
    nxt = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # hands the permit to `granted` ...
    granted.cancel()  # ... which is cancelled before it runs
    await asyncio.wait_for(nxt, timeout=1)  # the next waiter got the permit
    assert granted.cancelled() and limiter.in_flight == 1
    limiter.release()
    assert baseline(limiter) == (0, 0, {})


async def test_a_caller_queued_behind_a_leaving_waiter_gets_the_free_permit() -> None:
    """A waiter is cancelled (its future at once, its withdraw when its task resumes) and the
    holder releases in the same loop turn, then acquires again at once (a Router moving an
    attempt on, a caller's next call): it queues behind the leaving waiter, which still
    counts. When that one withdraws, the free permit goes to the queued caller; it is not
    stranded with the permit idle (before: in_flight 0, one waiting, for ever)."""
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    leaving = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)

    async def release_and_acquire_again() -> None:
        limiter.release()  # nobody to hand it to: the only waiter is leaving
        await limiter.acquire()  # queued: the leaver still counts

    again = asyncio.create_task(release_and_acquire_again())  # runs before the leaver resumes
    leaving.cancel()
    await asyncio.wait_for(again, timeout=1)
    assert leaving.cancelled() and baseline(limiter) == (1, 0, {})
    limiter.release()


async def test_a_queued_layer_call_waits_on_the_limiters_future_and_passes_a_late_grant_on():
    """A ConcurrencyLimit call queued on the in-process limiter awaits the limiter's future in
    its own frame (no acquire() coroutine: less memory per waiter); granted, then cancelled
    before it resumed, it passes the permit to the call behind it. A subclass that overrides
    ``acquire`` is still waited through it."""
    limiter = ConcurrencyLimiter(1)
    layer = ConcurrencyLimit(limiter)
    assert layer._enqueue is not None

    async def provider(name):
        await asyncio.sleep(1)
        return name

    guarded = lg.guard(layer)(provider)
    await limiter.acquire()  # held here
    granted = asyncio.create_task(guarded("granted"))
    behind = asyncio.create_task(guarded("behind"))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    limiter.release()  # hands the permit to `granted` ...
    granted.cancel()  # ... which is cancelled before it resumes
    assert await behind == "behind" and granted.cancelled()
    assert baseline(limiter) == (0, 0, {})

    class Spy(ConcurrencyLimiter):
        async def acquire(self, *, priority=0, partition=None):
            await super().acquire(priority=priority, partition=partition)

    assert ConcurrencyLimit(Spy(1))._enqueue is None


async def test_release_without_acquire_is_an_error() -> None:
    """Releasing more than acquired is a bug in the caller and says so."""
    with pytest.raises(RuntimeError, match="release"):
        ConcurrencyLimiter(1).release()


async def test_layer_uses_callables_and_call_attributes() -> None:
    """The layer reads priority/key from the arguments, else from call.priority/partition."""
    seen = []

    class Spy(ConcurrencyLimiter):
        async def acquire(self, *, priority=0, partition=None):
            seen.append((priority, partition))
            await super().acquire(priority=priority, partition=partition)

    async def fn(tenant, pri=0):
        return tenant

    shared = Spy(1)
    by_args = ConcurrencyLimit(shared, priority=lambda t, pri=0: pri, key=lambda t, pri=0: t)
    assert await lg.guard(by_args)(fn)("acme", pri=7) == "acme"
    by_call = ConcurrencyLimit(shared)
    call = lg.Call(fn, ("x",))
    call.priority, call.partition = 2, "tenant"
    await by_call(call, lg.compose([]))
    assert seen == [(7, "acme"), (2, "tenant")]
    assert by_args.limiter is by_call.limiter is shared
    assert baseline(shared) == (0, 0, {}) and shared.statistics().admitted == 2
    with pytest.raises(ValueError, match="set max_queue"):
        ConcurrencyLimit(shared, max_queue=3)


async def test_layer_limits_in_flight_and_releases_on_error() -> None:
    """The layer keeps at most `limit` calls in the provider and releases on failure."""
    from llmguard.testing import FakeLLM

    llm = FakeLLM(latency=1.0)
    guarded = lg.guard(ConcurrencyLimit(3))(llm.send_message)
    await asyncio.gather(*(guarded(str(i)) for i in range(10)))
    assert llm.max_in_flight == 3
    failing = lg.guard(layer := ConcurrencyLimit(1))(FakeLLM([ValueError("boom")]).send_message)
    with pytest.raises(ValueError):
        await failing("x")
    assert baseline(layer.limiter) == (0, 0, {})


@pytest.mark.parametrize("point", ["waiting", "in_call"])
async def test_layer_cancellation_at_each_await_point(point: str) -> None:
    """Cancelling while queued or while in the provider returns statistics to baseline, and
    the next call proceeds."""
    from llmguard.testing import FakeLLM

    layer = ConcurrencyLimit(1)
    guarded = lg.guard(layer)(FakeLLM(latency=5).send_message)
    blocker = asyncio.create_task(guarded("blocker"))
    victim = asyncio.create_task(guarded("victim"))
    await asyncio.sleep(1)
    (victim if point == "waiting" else blocker).cancel()
    await asyncio.gather(blocker, victim, return_exceptions=True)
    assert baseline(layer.limiter) == (0, 0, {})
    assert await guarded("next") == "echo: next"


def test_repr_shows_live_state() -> None:
    """__repr__ shows the limit and the live counters."""
    assert "limit=4 in_flight=0 waiting=0" in repr(ConcurrencyLimit(4))


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 5),
    jobs=st.lists(
        st.tuples(st.floats(0, 3), st.floats(0.1, 3), st.integers(0, 2), st.integers(0, 2),
                  st.booleans()),
        min_size=1, max_size=25,
    ),
    resizes=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 5)), max_size=4),
)
def test_in_flight_never_exceeds_the_limit(limit, jobs, resizes) -> None:
    """Property: whatever the arrivals, priorities, keys, cancellations and resizes, holders
    never exceed the limit in force when they were admitted, and everything returns to baseline."""
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit)
        holders = 0
        ceiling = limit  # the largest limit set so far

        async def job(start, duration, priority, key, cancel):
            nonlocal holders
            await asyncio.sleep(start)
            task = asyncio.current_task()
            if cancel:
                asyncio.get_running_loop().call_later(duration / 2, task.cancel)
            try:
                await limiter.acquire(priority=priority, partition=key)
            except asyncio.CancelledError:
                return
            holders += 1
            assert holders <= limiter.in_flight <= ceiling  # in_flight counts granted, not yet resumed
            if not resizes:
                assert holders <= limit
            try:
                await asyncio.sleep(duration)
            except asyncio.CancelledError:
                pass
            finally:
                holders -= 1
                limiter.release()

        async def resize(at, new):
            nonlocal ceiling
            await asyncio.sleep(at)
            ceiling = max(ceiling, new)
            limiter.limit = new

        await asyncio.gather(*(job(*j) for j in jobs), *(resize(*r) for r in resizes))
        assert baseline(limiter) == (0, 0, {})
        s = limiter.statistics()
        assert s.admitted <= len(jobs)

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_stream_holds_its_slot_until_the_end() -> None:
    """A streamed answer keeps its concurrency slot until the consumer finishes the stream."""
    layer = ConcurrencyLimit(1)

    async def gen(n: int):
        for i in range(n):
            await asyncio.sleep(1)
            yield i

    guarded = lg.guard(layer)(gen)
    stream = guarded(3)
    assert await stream.__anext__() == 0
    assert layer.limiter.in_flight == 1
    assert [c async for c in stream] == [1, 2]
    assert baseline(layer.limiter) == (0, 0, {})


async def test_admission_wait_is_noted_for_metrics() -> None:
    """A call that queued records how long it waited (call.record.wait), one admitted at once
    records nothing."""
    from llmguard.testing import FakeLLM

    seen = []

    async def spy(call, call_next):
        seen.append(call)
        return await call_next(call)

    guarded = lg.guard(spy, lg.ConcurrencyLimit(1))(FakeLLM(latency=3).send_message)
    await asyncio.gather(guarded("a"), guarded("b"))
    assert (seen[0].record.wait, seen[0].record.delayed_by) == (0.0, None)
    assert (seen[1].record.wait, seen[1].record.delayed_by) == (3.0, "concurrency_limit")



@pytest.mark.looptime(False)  # the real clock moves between two reads: no wait is made of that
async def test_a_tenants_call_taking_a_free_permit_did_not_wait() -> None:
    """A call of a partition and class (a gateway tenant's) that finds a permit free takes it
    without waiting: nothing recorded as a wait, no outer rate limit asked to count it again."""
    recounts = []
    layer = ConcurrencyLimit(ConcurrencyLimiter(2, max_wait=30.0))

    async def fn():
        return "ok"

    call = lg.Call(fn)
    call.priority, call.partition = 1, "acme"
    call.current.add_on_wait(lambda: recounts.append(1))
    assert await layer(call, lg.compose([])) == "ok"
    assert (call.record.wait, call.record.delayed_by, recounts) == (0.0, None, [])
    assert baseline(layer.limiter) == (0, 0, {}) and layer.limiter.statistics().admitted == 1

@settings(max_examples=40, deadline=None)
@given(calls=st.lists(st.tuples(st.sampled_from([0, 1, 2, None, "high", 1.5]),
                                st.sampled_from(["a", "b", None, 7, ["list"], {"d": 1}]),
                                st.floats(0, 2)),
                      min_size=1, max_size=20),
       limit=st.integers(1, 3))
def test_bad_priority_or_key_fails_that_call_alone(calls, limit) -> None:
    """Property (issue 21 #1): a ``priority`` callable returning a non-int or a ``key``
    returning something unhashable is a ``TypeError`` for that call, raised before a permit is
    taken; every other call completes and the limiter ends at baseline (it used to leave an
    empty class behind, raise inside the grant and hang every later caller)."""
    async def scenario() -> None:
        layer = ConcurrencyLimit(limit, priority=lambda p, k, d: p, key=lambda p, k, d: k)
        limiter = layer.limiter

        async def provider(p, k, d):
            assert limiter.in_flight <= limit
            await asyncio.sleep(d)
            return p

        guarded = lg.guard(layer)(provider)
        results = await asyncio.gather(*(guarded(*c) for c in calls), return_exceptions=True)
        for (p, k, _), result in zip(calls, results):
            bad = not isinstance(p, int) or isinstance(k, (list, dict))
            if bad:
                assert isinstance(result, TypeError) and ("priority" in str(result)
                                                          or "hashable" in str(result))
            else:
                assert result == p
        assert baseline(limiter) == (0, 0, {}) and not limiter._queue
        # the limiter itself refuses the same values directly, holding nothing afterwards
        for bad in ({"priority": None}, {"partition": []}):
            with pytest.raises(TypeError):
                await limiter.acquire(**bad)
        assert baseline(limiter) == (0, 0, {})

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


class CountingFuture(asyncio.Future):
    """A future that counts equality comparisons: a scan of a waiter queue compares each
    element it passes, so the count measures the work of removing waiters (deterministically)."""

    compares = 0

    def __eq__(self, other):
        CountingFuture.compares += 1
        return self is other

    __hash__ = asyncio.Future.__hash__


@pytest.mark.parametrize("order", ["lifo", "random", "fifo_timeouts"])
async def test_cancelling_waiters_in_any_order_is_linear(order, monkeypatch) -> None:
    """Issue 21 #7: taking a waiter out of the queue does not scan it. Cancelling N waiters
    newest-first, in random order, or by timeout compares no waiter with another (a
    ``deque.remove`` made it N²/2 comparisons: 10k waiters blocked the loop for a second),
    and the survivors are still served in FIFO order."""
    import random

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "create_future", lambda: CountingFuture(loop=loop))
    CountingFuture.compares = 0
    n = 3000
    limiter = ConcurrencyLimiter(1, max_wait=10.0 if order == "fifo_timeouts" else None)
    await limiter.acquire()
    tasks = [asyncio.create_task(limiter.acquire(partition=i % 3)) for i in range(n)]
    await asyncio.sleep(0)
    assert limiter.waiting == n
    if order == "fifo_timeouts":
        await asyncio.gather(*tasks, return_exceptions=True)
    else:
        doomed = tasks[1:] if order == "lifo" else random.Random(1).sample(tasks[1:], n - 1)
        if order == "lifo":
            doomed.reverse()
        for task in doomed:
            task.cancel()
            await asyncio.sleep(0)
        await asyncio.gather(*doomed, return_exceptions=True)
        assert limiter.waiting == 1
        limiter.release()
        await tasks[0]
    assert CountingFuture.compares <= n // 10
    limiter.release()
    assert baseline(limiter) == (0, 0, {}) and not limiter._queue


async def test_a_release_reentered_from_the_grant_never_exceeds_the_limit(monkeypatch) -> None:
    """Issue 21 #10: the cyclic GC may run a finalizer inside ``release()`` (a stream freed
    there gives its permit back, re-entering the grant). Here each wake-up runs ``gc.collect()``
    over a garbage cycle whose finalizer releases a permit: in-flight never exceeds the limit,
    every waiter is served once, and the counts return to baseline."""
    import gc

    limiter = ConcurrencyLimiter(2)
    loop = asyncio.get_running_loop()
    peak = 0

    class Holder:  # a permit holder that is garbage in a cycle; its finalizer releases
        def __init__(self):
            self.me = self

        def __del__(self):
            limiter.release()

    class Reentrant(asyncio.Future):
        def set_result(self, value):
            nonlocal peak
            peak = max(peak, limiter.in_flight)
            if pending:
                pending.pop()  # drop the last reference: only the cyclic GC can free it
                gc.collect()
            peak = max(peak, limiter.in_flight)
            super().set_result(value)

    monkeypatch.setattr(loop, "create_future", lambda: Reentrant(loop=loop))
    await limiter.acquire()
    await limiter.acquire()
    pending = [Holder()]  # holds the second permit; freed by the GC during the first grant
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(4)]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.sleep(0)
    assert peak <= 2 and limiter.in_flight == 2 and limiter.waiting == 2
    for _ in range(4):
        limiter.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert baseline(limiter) == (0, 0, {})


class MinimalLimiter:
    """A Limiter written from the protocol's docstring alone: one FIFO, priorities ignored
    (allowed: the contract says higher is served first only among what the limiter orders)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_flight, self._queue = limit, 0, []

    async def acquire(self, *, priority: int = 0, partition=None) -> None:
        if self.in_flight < self.limit and not self._queue:
            self.in_flight += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # granted meanwhile: pass it on, never lose it
            elif future in self._queue:
                self._queue.remove(future)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        while self._queue and self.in_flight < self.limit:
            future = self._queue.pop(0)
            if not future.done():
                self.in_flight += 1
                future.set_result(None)

    def statistics(self):
        return {"in_flight": self.in_flight, "waiting": len(self._queue)}


async def test_concurrency_limit_drives_a_limiter_written_from_its_docstring() -> None:
    """The ``Limiter`` seam: a minimal limiter written from the protocol's docstring alone
    passes ``isinstance(x, Limiter)``, and ``ConcurrencyLimit`` keeps within its limit, gives
    permits back on error and cancellation, and shows its statistics."""
    limiter = MinimalLimiter(2)
    assert isinstance(limiter, Limiter)
    layer = ConcurrencyLimit(limiter, priority=lambda x: 0)
    peak = active = 0

    async def provider(x):
        nonlocal peak, active
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(1)
            if x == "fail":
                raise ConnectionError("down")
            return x
        finally:
            active -= 1

    guarded = lg.guard(layer)(provider)
    doomed = asyncio.create_task(guarded("cancelled"))
    results = asyncio.gather(*(guarded(x) for x in ["a", "fail", "b", "c", "d"]),
                             return_exceptions=True)
    await asyncio.sleep(0.5)
    doomed.cancel()
    out = await results
    assert out[0] == "a" and isinstance(out[1], ConnectionError) and out[2:] == ["b", "c", "d"]
    assert peak <= 2 and layer.statistics() == {"in_flight": 0, "waiting": 0}
    with pytest.raises(TypeError, match="priority"):
        await lg.guard(ConcurrencyLimit(limiter, priority=lambda x: None))(provider)("x")
    assert limiter.in_flight == 0
