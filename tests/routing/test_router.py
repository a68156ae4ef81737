"""Router and Deployment: one model over several deployments, each attempt reserved at a
deployment with room now, never any deployment over its quota (virtual time)."""

from __future__ import annotations

import asyncio
import random

import pytest

import llmguard as lg
from llmguard import Deployment, FailureKind, Router
from llmguard._routing.learn import learned_limits
from llmguard._routing.strategies import headroom, least_latency, ordered, weighted
from llmguard.testing import (FakeLLM, FixedWindowServer, SimulatedProvider, TokenBucketServer,
                              make_error)

MESSAGES = [{"role": "user", "content": "hello"}]


def now() -> float:
    return asyncio.get_running_loop().time()


def servers_and_deployments(cls=TokenBucketServer, rpms=(60, 120, 300), **options):
    servers = [cls(rpm=rpm, latency=1.0) for rpm in rpms]
    deployments = [Deployment(server.acompletion, name=f"d{rpm}", rpm=rpm, **options)
                   for server, rpm in zip(servers, rpms)]
    return servers, deployments


# -- bad input ------------------------------------------------------------------------------


async def target(**kwargs):
    return kwargs


def test_bad_input_is_refused_at_construction() -> None:
    """No deployments, duplicate names, something else than a Deployment, a deployment in two
    routers, an unknown strategy: a clear error naming the fix."""
    with pytest.raises(ValueError, match="at least one deployment"):
        Router()
    with pytest.raises(ValueError, match="two deployments have the name 'a'"):
        Router(Deployment(target, name="a"), Deployment({"model": "m"}, name="a"))
    with pytest.raises(TypeError, match="Deployment objects"):
        Router(target)
    shared = Deployment(target, name="a")
    Router(shared)
    with pytest.raises(ValueError, match="already belongs to another Router"):
        Router(shared)
    with pytest.raises(ValueError, match="strategy must be one of 'headroom'"):
        Router(Deployment(target, name="a"), strategy="fastest")


def test_bad_deployment_is_refused_at_construction() -> None:
    """A target that is neither an async callable nor a dict of keyword overrides, an empty
    dict, a missing name, bad quotas: errors naming the argument; a credential in the target
    is not echoed."""
    with pytest.raises(TypeError, match="neither an async callable"):
        Deployment(print, name="a")
    with pytest.raises(ValueError, match="non-empty dict"):
        Deployment({}, name="a")
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        Deployment(target, name=None)
    with pytest.raises(ValueError, match="rpm must be"):
        Deployment(target, name="a", rpm=0)
    with pytest.raises(ValueError, match="output_tpm must be"):
        Deployment(target, name="a", output_tpm=-5)
    with pytest.raises(ValueError, match="burst must be"):
        Deployment(target, name="a", rpm=10, burst=2)
    with pytest.raises(ValueError, match="refill must be"):
        Deployment(target, name="a", rpm=1, refill="leaky")
    with pytest.raises(TypeError) as error:
        Deployment({"sk-secret-abcdefghijklmnopqrstuvwxyz": 1} and "sk-abcdefghijklmnopqrstuvwx",
                   name="a")
    assert "sk-abcdefghijklmnopqrstuvwx" not in str(error.value)


# -- never over any deployment's quota ------------------------------------------------------


@pytest.mark.parametrize("cls,refill", [(TokenBucketServer, "continuous"),
                                        (FixedWindowServer, "window")])
async def test_demand_three_times_the_sum_uses_every_quota_and_never_exceeds_one(cls, refill):
    """Three deployments of 60/120/300 RPM, demand 3x their sum: every call done, no 429, no
    server ever sees more than its quota, and the wall time is the servers' ideal (within 5%)."""
    servers, deployments = servers_and_deployments(cls, refill=refill)
    chat = lg.Pipeline(name="chat").retry(attempts=4).route(*deployments).wrap(
        servers[0].acompletion)
    n = 3 * 480
    start = now()
    results = await asyncio.gather(*(chat(model="m", messages=MESSAGES) for _ in range(n)))
    wall = now() - start
    assert len(results) == n
    assert sum(s.statistics().rate_limited for s in servers) == 0
    for server, rpm in zip(servers, (60, 120, 300)):
        assert server.statistics().peak_window_requests <= (2 * rpm if refill == "continuous"
                                                            else rpm)
    # The combined ideal: all three quotas in parallel, as served.
    ideal = max(s.ideal_time(s.statistics().arrivals) for s in servers)
    assert wall <= 1.05 * ideal
    stats = chat.pipeline.stats()["router"]
    assert stats.in_flight == stats.waiting == 0
    assert {name: d.sent for name, d in stats.deployments.items()} == {
        "d60": servers[0].statistics().arrivals, "d120": servers[1].statistics().arrivals,
        "d300": servers[2].statistics().arrivals}


SHAPES = {
    "fixed window": lambda rpm: FixedWindowServer(rpm=rpm, latency=1.0),
    "sliding window": lambda rpm: SimulatedProvider(rpm=rpm, latency=1.0, capacity=1000),
    "token bucket": lambda rpm: TokenBucketServer(rpm=rpm, latency=1.0),
    "429 without headers": lambda rpm: FixedWindowServer(rpm=rpm, latency=1.0,
                                                          retry_after=False,
                                                          rate_limit_headers=False),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_readme_stack_with_a_router_never_sends_a_deployment_over_its_quota(shape):
    """The README's stack with a Router in RateLimit's place, default settings (Metrics,
    Cache, Fallback, Retry, Router), two deployments of 30 and 60 RPM and 2.5x their quota at
    once, against each server shape: every call done, no server ever answers 429."""
    servers = [SHAPES[shape](rpm) for rpm in (30, 60)]
    router = Router(*(Deployment(s.acompletion, name=str(rpm), rpm=rpm)
                      for s, rpm in zip(servers, (30, 60))))
    chat = (lg.Pipeline(name="chat").metrics().cache(ttl=300).fallback({"model": "backup"})
            .retry(attempts=4).then(router).wrap(servers[0].acompletion))
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(225)]
    await asyncio.gather(*(chat(model="m", messages=m) for m in prompts))
    assert sum(s.statistics().served for s in servers) == 225
    assert sum(s.statistics().rate_limited for s in servers) == 0
    stats = chat.pipeline.stats()
    assert stats["retry"].retries == 0 and stats["router"].in_flight == 0


async def test_concurrent_callers_never_take_the_same_last_unit() -> None:
    """Three deployments with one request of room each and ten simultaneous callers: exactly
    three are sent at once, one to each; the others wait for the next room."""
    seen: list[tuple[str, float]] = []

    def make(name):
        async def send(**kwargs):
            seen.append((name, now()))
            return name
        return send

    router = Router(*(Deployment(make(n), name=n, rpm=1) for n in "abc"))
    chat = lg.guard(router)(make("base"))
    tasks = [asyncio.create_task(chat(messages=MESSAGES)) for _ in range(10)]
    await asyncio.sleep(1)
    assert sorted(name for name, at in seen) == ["a", "b", "c"]
    assert router.statistics().waiting == 7
    await asyncio.gather(*tasks)
    for name in "abc":  # never two within 60 s at one deployment
        times = [at for n, at in seen if n == name]
        assert all(later - earlier >= 60 for earlier, later in zip(times, times[1:]))


async def test_waiting_line_keeps_priority_then_arrival_order() -> None:
    """With no room anywhere, waiting calls are served by priority, then first come."""
    order: list[int] = []

    async def send(i, **kwargs):
        order.append(i)
        return i

    router = Router(Deployment(send, name="a", rpm=1), Deployment(send, name="b", rpm=1),
                    priority=lambda i, **kwargs: kwargs.get("priority", 0))
    chat = lg.guard(router)(send)
    first = [asyncio.create_task(chat(i)) for i in (0, 1)]
    await asyncio.sleep(0)
    waiters = []
    for i, priority in ((2, 0), (3, 5), (4, 0), (5, 5)):
        waiters.append(asyncio.create_task(chat(i, priority=priority)))
        await asyncio.sleep(0)
    await asyncio.gather(*first, *waiters)
    assert order == [0, 1, 3, 5, 2, 4]


async def test_waiting_line_takes_tenants_in_turn() -> None:
    """Issue 34 #11 (a gateway model with deployments): behind tenant a's burst, tenant b's
    calls alternate with a's (round-robin by ``call.partition``, FIFO within a tenant)."""
    order: list[str] = []

    async def send(name, **kwargs):
        order.append(name)
        return name

    async def tenant_of(call, call_next):  # what the gateway does: the tenant is the partition
        call.partition = call.args[0][0]
        return await call_next(call)

    router = Router(Deployment(send, name="d", rpm=1))
    chat = lg.guard(tenant_of, router)(send)
    tasks = [asyncio.create_task(chat(f"a{i}")) for i in range(4)]
    await asyncio.sleep(1)
    tasks += [asyncio.create_task(chat(f"b{i}")) for i in range(2)]
    await asyncio.gather(*tasks)
    assert order == ["a0", "a1", "b0", "a2", "b1", "a3"]
    assert router.statistics().waiting == 0


async def test_a_call_that_moved_away_does_not_hold_up_the_line() -> None:
    """The head of the line failed at deployment b and waits for a; a later call that may go
    anywhere is served by b at once, not held behind it."""
    a, b = FakeLLM(), FakeLLM([make_error(FailureKind.OVERLOADED)])
    router = Router(Deployment(a.send_message, name="a", rpm=1),
                    Deployment(b.send_message, name="b"), strategy="ordered")
    chat = lg.guard(router)(a.send_message)
    await chat("first")  # a's one request this minute
    moved = asyncio.create_task(chat("moved"))  # b fails it: it waits for a, 60 s
    await asyncio.sleep(1)
    assert router.statistics().waiting == 1
    start = now()
    with lg.recording() as records:
        assert await chat("later") == "echo: later"
    assert now() - start < 1 and records[0].deployment == "b"
    await moved
    assert now() >= 60


async def test_waiting_for_room_never_spins() -> None:
    """Calls waiting minutes for room ask the quota store once per wake-up (when the earliest
    room is due), not in a loop: 6 calls over two deployments of 1 RPM, 3 minutes."""
    class Counting(lg.backends.MemoryBackend):
        reserves = 0

        async def reserve(self, key, quotas, tokens):
            Counting.reserves += 1
            return await super().reserve(key, quotas, tokens)

    async def send(prompt):
        return prompt

    router = Router(Deployment(send, name="a", rpm=1), Deployment(send, name="b", rpm=1),
                    backend=Counting())
    chat = lg.guard(router)(send)
    await asyncio.gather(*(chat(str(i)) for i in range(6)))
    assert 120 <= now() < 122  # two more windows (each with its margin)
    assert Counting.reserves <= 6 * 2 + 3 * 2  # each grant, plus a look at both per wake-up


async def test_strategy_ordered_sends_overflow_only() -> None:
    """``ordered``: the primary takes all it can; the overflow deployment only the rest."""
    servers, deployments = servers_and_deployments(rpms=(60, 300), refill="continuous")
    chat = lg.guard(Router(*deployments, strategy="ordered"))(servers[0].acompletion)
    await asyncio.gather(*(chat(model="m", messages=MESSAGES) for _ in range(100)))
    assert servers[0].statistics().arrivals == 60  # its full bucket, then the overflow
    assert servers[1].statistics().arrivals == 40


# -- moving an attempt ----------------------------------------------------------------------


async def test_a_5xx_moves_the_attempt_and_retry_sees_one_call() -> None:
    """A deployment answering 503 moves the attempt to another: the call succeeds there, the
    record names it, and a Retry above schedules no retry."""
    down = FakeLLM([make_error(FailureKind.OVERLOADED)] * 100)
    up = FakeLLM()
    router = Router(Deployment(down.send_message, name="down"),
                    Deployment(up.send_message, name="up"), strategy="ordered")
    chat = lg.Pipeline().retry(attempts=3).then(router).wrap(up.send_message)
    with lg.recording() as records:
        assert await chat("hi") == "echo: hi"
    assert records[0].deployment == "up"
    assert records[0].retries == 0
    assert records[0].sent == 2
    stats = router.statistics()
    assert stats.failovers == 1
    assert stats.deployments["down"].moved_away == 1


async def test_an_error_of_the_request_does_not_move() -> None:
    """A bad request is the caller's problem: raised as is, no other deployment tried."""
    bad = FakeLLM([make_error(FailureKind.BAD_REQUEST)])
    other = FakeLLM()
    chat = lg.guard(Router(Deployment(bad.send_message, name="a"),
                           Deployment(other.send_message, name="b"), strategy="ordered"))(
        other.send_message)
    with pytest.raises(Exception, match="Invalid request"):
        await chat("hi")
    assert other.call_count == 0


async def test_every_deployment_failing_raises_the_last_error() -> None:
    """When every deployment failed, the call raises (a Retry above then retries it)."""
    llms = [FakeLLM([make_error(FailureKind.SERVER_ERROR)] * 2) for _ in range(2)]
    router = Router(*(Deployment(llm.send_message, name=str(i)) for i, llm in enumerate(llms)))
    chat = lg.Pipeline().retry(attempts=2, backoff=0.1).then(router).wrap(llms[0].send_message)
    with lg.recording() as records:
        with pytest.raises(Exception, match="Internal server error"):
            await chat("hi")
    assert records[0].sent == 4 and records[0].retries == 1
    assert router.statistics().exhausted == 2


async def test_a_429_cools_that_deployment_down_alone() -> None:
    """A 429 with Retry-After 5 s keeps its deployment out for 5 s, alone, with an event each
    way; the other deployment takes the calls meanwhile."""
    limited = FakeLLM([make_error(FailureKind.RATE_LIMITED, retry_after=5.0)])
    other = FakeLLM()
    router = Router(Deployment(limited.send_message, name="a", rpm=100),
                    Deployment(other.send_message, name="b", rpm=100), strategy="ordered")
    chat = lg.guard(router)(other.send_message)
    seen: list[tuple[str, str, float]] = []
    with lg.subscribe(lambda e: seen.append((e.kind.value, e.detail, now())),
                      lg.EventKind.DEPLOYMENT_COOLDOWN, lg.EventKind.DEPLOYMENT_RECOVERED):
        await chat("one")
        stats = router.statistics().deployments
        assert stats["a"].rate_limited == 1 and 4.9 < stats["a"].cooling_for <= 5.0
        await chat("two")
        assert (limited.call_count, other.call_count) == (1, 2)
        await asyncio.sleep(5)
        await chat("three")
    assert limited.call_count == 2
    assert [(kind, name) for kind, name, _ in seen] == [
        ("deployment_cooldown", "a"), ("deployment_recovered", "a")]
    assert seen[1][2] - seen[0][2] == pytest.approx(5.0)


async def test_a_slow_deployment_times_out_and_the_attempt_moves() -> None:
    """``Deployment(timeout=)`` bounds an attempt there; on expiry it moves on."""
    slow, fast = FakeLLM(latency=30), FakeLLM(latency=1)
    chat = lg.guard(Router(Deployment(slow.send_message, name="slow", timeout=2),
                           Deployment(fast.send_message, name="fast"), strategy="ordered"))(
        fast.send_message)
    start = now()
    with lg.recording() as records:
        assert await chat("hi") == "echo: hi"
    assert now() - start == pytest.approx(3.0)
    assert records[0].deployment == "fast"
    assert slow.in_flight == 0


async def test_a_failing_deployment_opens_its_circuit_and_comes_back() -> None:
    """A deployment failing every call opens its own circuit: no more attempts there until it
    probes again; the other keeps serving, no call fails; it comes back when healthy."""
    healthy_at = 40.0

    async def flaky(prompt):
        if now() < healthy_at:
            raise make_error(FailureKind.SERVER_ERROR)
        return f"flaky: {prompt}"

    other = FakeLLM(latency=0.5)
    router = Router(Deployment(flaky, name="flaky"), Deployment(other.send_message, name="ok"),
                    strategy="ordered")
    chat = lg.guard(router)(other.send_message)
    kinds: list[str] = []
    with lg.subscribe(lambda e: kinds.append(f"{e.kind.value}:{e.detail}"),
                      lg.EventKind.DEPLOYMENT_COOLDOWN, lg.EventKind.DEPLOYMENT_RECOVERED):
        for _ in range(60):
            await chat("hi")
            await asyncio.sleep(1)
    stats = router.statistics().deployments["flaky"]
    assert stats.failed <= 5 + 4  # 5 to open, then one probe per 10 s while down (40 s)
    assert stats.succeeded > 0 and stats.circuit == "closed"
    assert other.call_count + stats.succeeded == 60  # every call answered, none failed
    assert "deployment_cooldown:flaky" in kinds and kinds[-1] == "deployment_recovered:flaky"


async def test_a_circuit_due_to_probe_gets_one_call_not_a_burst() -> None:
    """When a failing deployment's circuit is due to probe, one waiting call goes there; the
    others are not sent to be refused by the circuit and moved (no refusal at all)."""
    async def flaky(prompt):
        if now() < 10:
            raise make_error(FailureKind.OVERLOADED)
        await asyncio.sleep(1)
        return "flaky"

    other = FakeLLM(latency=1)
    router = Router(Deployment(flaky, name="flaky"),
                    Deployment(other.send_message, name="ok", rpm=30, refill="continuous"))
    chat = lg.guard(router)(other.send_message)
    refused: list[lg.Event] = []
    with lg.subscribe(refused.append, lg.EventKind.ADMISSION_REJECTED):
        await asyncio.gather(*(chat("hi") for _ in range(100)))
    assert refused == []
    stats = router.statistics()
    assert stats.failovers == stats.deployments["flaky"].failed == 5
    assert stats.deployments["flaky"].succeeded > 40  # back after its probe at 10 s


# -- what a deployment learns ---------------------------------------------------------------


def test_learned_limits_read_the_limit_headers() -> None:
    """x-ratelimit-limit-requests/-tokens are the per-minute quotas; unreadable ones are None."""
    assert learned_limits({"x-ratelimit-limit-requests": "60"}) == (60, None)
    assert learned_limits({"x-ratelimit-limit-requests": "60",
                           "x-ratelimit-limit-tokens": "90000"}) == (60, 90000)
    assert learned_limits({"x-ratelimit-limit-requests": "lots"}) is None
    # no number either: "inf" (or past a float's range) raised OverflowError
    assert learned_limits({"x-ratelimit-limit-requests": "inf",
                           "x-ratelimit-limit-tokens": "1e400"}) is None
    assert learned_limits({}) is None and learned_limits(None) is None


async def test_quota_learned_from_headers_only() -> None:
    """A deployment given no quota sends one call at a time until its headers state the
    limits, then fills them: every call done, not one 429."""
    server = TokenBucketServer(rpm=60, latency=1.0)

    async def send(**kwargs):
        result = await server.acompletion(**kwargs)
        router.observe_headers(server.headers(now()))  # what an integration does
        return result

    router = Router(Deployment(send, name="learned", refill="continuous"))
    chat = lg.guard(router)(send)
    assert not router.statistics().deployments["learned"].quotas_known
    await asyncio.gather(*(chat(model="m", messages=MESSAGES) for _ in range(150)))
    assert router.statistics().deployments["learned"].quotas_known
    assert server.statistics().rate_limited == 0
    assert now() <= 1.05 * server.ideal_time(150) + 1  # the first probe costs one latency


async def test_response_headers_written_below_teach_the_deployment_that_answered() -> None:
    """An upstream below the router writes ``call.response_headers`` (HeaderObserver): the
    deployment the attempt went to learns its quota from them, the other does not."""
    server = TokenBucketServer(rpm=60, latency=1.0)

    async def upstream(call, call_next):  # what the _upstream transports do
        result = await call_next(call)
        call.response_headers = server.headers(now())
        return result

    router = Router(Deployment({"model": "a"}, name="a"), Deployment({"model": "b"}, name="b",
                                                                      rpm=5),
                    strategy="ordered")
    chat = lg.guard(router, upstream)(server.acompletion)
    await chat(model="m", messages=MESSAGES)
    stats = router.statistics().deployments
    assert stats["a"].quotas_known  # 60 a minute, and as full as the server said (60 left)
    assert stats["a"].requests_available == 60
    assert stats["b"].requests_available == 5


async def test_headers_outside_an_attempt_change_nothing() -> None:
    """observe_headers with no attempt of this router in progress is ignored."""
    router = Router(Deployment(target, name="a"))
    router.observe_headers({"x-ratelimit-limit-requests": "5"})
    assert not router.statistics().deployments["a"].quotas_known


# -- streams and strategies -----------------------------------------------------------------


async def test_a_stream_holds_its_deployment_slot_until_it_ends() -> None:
    """A streamed answer keeps the deployment's concurrency slot until read to its end."""
    llm = FakeLLM(["one two three"])
    router = Router(Deployment(llm.stream_message, name="a", concurrency=1))
    chat = lg.guard(router)(llm.stream_message)
    chunks = []
    async for chunk in chat("hi"):
        chunks.append(chunk)
        assert router.statistics().deployments["a"].in_flight == 1
    assert len(chunks) == 3
    assert router.statistics().deployments["a"].in_flight == 0


class _D:
    def __init__(self, name, free=1.0, weight=1, latency=None):
        self.name, self._free, self.weight, self.latency = name, free, weight, latency

    def headroom(self):
        return self._free


def test_strategies_order_deployments() -> None:
    """headroom: most free first; ordered: as given; least_latency: unmeasured, then fastest;
    weighted: first in proportion to weight."""
    rng = random.Random(1)
    a, b, c = _D("a", 0.2, latency=3), _D("b", 0.9, latency=None), _D("c", 0.5, latency=1)
    assert [d.name for d in headroom([a, b, c], rng)] == ["b", "c", "a"]
    assert [d.name for d in ordered([a, b, c], rng)] == ["a", "b", "c"]
    assert [d.name for d in least_latency([a, b, c], rng)] == ["b", "c", "a"]
    heavy, light = _D("heavy", weight=3), _D("light", weight=1)
    firsts = [weighted([heavy, light], rng)[0].name for _ in range(4000)]
    assert firsts.count("heavy") / 4000 == pytest.approx(0.75, abs=0.03)


async def test_weighted_and_least_latency_spread_calls_as_they_say() -> None:
    """With room everywhere: ``weighted`` sends in proportion to the weights (3:1), and
    ``least_latency`` sends almost everything to the faster deployment once both are measured."""
    heavy, light = FakeLLM(), FakeLLM()
    router = Router(Deployment(heavy.send_message, name="heavy", weight=3, concurrency=10_000),
                    Deployment(light.send_message, name="light", concurrency=10_000),
                    strategy="weighted", seed=7)
    chat = lg.guard(router)(heavy.send_message)
    await asyncio.gather(*(chat(str(i)) for i in range(2000)))
    assert heavy.call_count / 2000 == pytest.approx(0.75, abs=0.03)

    fast, slow = FakeLLM(latency=0.1), FakeLLM(latency=2.0)
    router = Router(Deployment(slow.send_message, name="slow", concurrency=10_000),
                    Deployment(fast.send_message, name="fast", concurrency=10_000),
                    strategy="least_latency")
    chat = lg.guard(router)(fast.send_message)
    for i in range(50):
        await chat(str(i))
    assert slow.call_count == 1 and fast.call_count == 49


async def test_dict_targets_override_the_guarded_functions_arguments() -> None:
    """A dict target runs the layers below and the guarded function with those keywords."""
    llm = FakeLLM()
    router = Router(Deployment({"model": "eu"}, name="eu", rpm=1),
                    Deployment({"model": "us"}, name="us", rpm=1), strategy="ordered")
    chat = lg.guard(router)(llm.acompletion)
    with lg.recording() as records:
        await chat(model="m", messages=MESSAGES)
        await chat(model="m", messages=MESSAGES)
    assert [r.models for r in records] == [("eu",), ("us",)]
    assert [r.deployment for r in records] == ["eu", "us"]


# -- chaos ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_faults_and_cancellations_leak_nothing_and_never_exceed_a_quota(seed) -> None:
    """1,500 calls through Retry and a Router of three deployments (60/120/300 RPM) over a
    provider injecting 429s, 503s, 500s, timeouts and dropped connections, a tenth of the
    callers cancelled at random: no deployment ever admits more than its quota in any 60 s
    window at the provider, every call ends (answer, error or cancellation), and afterwards
    nothing is in flight, waiting or reserved."""
    rng = random.Random(seed)
    llm = FakeLLM(latency=0.5)
    arrivals: dict[str, list[float]] = {"a": [], "b": [], "c": []}

    async def probe(call, call_next):  # at the provider: which deployment, when
        arrivals[call.kwargs["model"]].append(now())
        return await call_next(call)

    faults = lg.testing.Faults(error_rate=0.15, seed=seed, kinds={
        FailureKind.RATE_LIMITED: 1, FailureKind.OVERLOADED: 2, FailureKind.SERVER_ERROR: 2,
        FailureKind.TIMEOUT: 1, FailureKind.CONNECTION: 1})
    rpms = {"a": 60, "b": 120, "c": 300}
    # refill="window": the sliding log's guarantee, checked below (random 429s with no shape
    # behind them would teach "auto" nothing true).
    router = Router(*(Deployment({"model": n}, name=n, rpm=r, timeout=5, refill="window")
                      for n, r in rpms.items()), max_wait=120)
    chat = lg.Pipeline().retry(attempts=3, backoff=0.5).then(router, probe, faults).wrap(
        llm.acompletion)

    async def one(i: int) -> str:
        await asyncio.sleep(rng.uniform(0, 120))
        task = asyncio.create_task(chat(model="m", messages=MESSAGES))
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0, 3))
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except Exception:
            return "error"
        return "ok"

    outcomes = await asyncio.gather(*(one(i) for i in range(1500)))
    assert len(outcomes) == 1500 and outcomes.count("ok") > 900  # most, despite the faults
    for name, times in arrivals.items():
        times.sort()
        j = 0
        for i, at in enumerate(times):
            while times[j] <= at - 60:
                j += 1
            assert i - j + 1 <= rpms[name], (name, at)
    await asyncio.sleep(120)
    stats = router.statistics()
    assert stats.in_flight == stats.waiting == 0
    for one_stats in stats.deployments.values():
        assert one_stats.in_flight == 0


async def test_input_and_output_quotas_per_deployment_are_never_exceeded() -> None:
    """Two deployments limiting input and output tokens apart, as Anthropic does (buckets of
    4,000 input and 1,000 output tokens a minute, and twice that), 60 calls of max_tokens 100
    using 20: every call answered, neither server ever refuses one (the Router reserves the
    prompt and max_tokens at each, and gives the unused output back), the bigger deployment
    takes more, and a call whose max_tokens no deployment's output quota holds is refused at
    once."""
    from llmguard.testing import InputOutputBucketServer

    servers = [InputOutputBucketServer(input_tpm=4_000 * n, output_tpm=1_000 * n, latency=1.0,
                                       output_tokens=20) for n in (1, 2)]
    router = Router(*(Deployment(server.amessages, name=f"x{n}", input_tpm=4_000 * n,
                                 output_tpm=1_000 * n, refill="continuous")
                      for n, server in zip((1, 2), servers)))
    chat = lg.guard(router)(servers[0].amessages)
    with lg.recording() as records:
        await asyncio.gather(*(chat(model="claude", messages=MESSAGES, max_tokens=100)
                               for _ in range(60)))
    assert [s.statistics().rate_limited for s in servers] == [0, 0]
    assert sum(s.statistics().served for s in servers) == 60
    taken = {name: sum(r.deployment == name for r in records) for name in ("x1", "x2")}
    assert taken["x2"] > taken["x1"] > 0, taken
    stats = router.statistics()
    assert stats.in_flight == 0 and stats.deployments["x1"].quotas_known
    with pytest.raises(lg.RequestTooLarge):
        await chat(model="claude", messages=MESSAGES, max_tokens=5_000)
