"""``Deployment(timeout=)`` bounds an attempt at the provider from when it is sent, as the
Timeout layer does (README, "Time budgets"): time the attempt spends queued in the layers
below the Router (a ConcurrencyLimit, a RateLimit) never counts, so a queued request is never
expired and moved to another deployment for a queue of ours (virtual time)."""

from __future__ import annotations

import asyncio

import pytest
from cancel_points import outcome, start_cancelled_at

import llmguard as lg
from llmguard import Deployment, Router


def now() -> float:
    return asyncio.get_running_loop().time()


class Provider:
    """One answer per call: after ``latency`` s, or never for the models in ``hung``; records
    (model, sent at) per call that reached it."""

    def __init__(self, latency: float, hung: tuple[str, ...] = ()) -> None:
        self.latency, self.hung = latency, hung
        self.sent: list[tuple[str, float]] = []
        self.in_flight = 0

    async def acompletion(self, *, model: str, prompt: str) -> str:
        self.sent.append((model, now()))
        self.in_flight += 1
        try:
            await asyncio.sleep(float("inf") if model in self.hung else self.latency)
        finally:
            self.in_flight -= 1
        return f"{model}: {prompt}"


def routed(provider: Provider, timeout: float = 2, **options) -> tuple[Router, lg.Guarded]:
    """Deployments "a" (the primary, bounded by ``timeout``) and "b", over one
    ConcurrencyLimit(1) below the Router: the calls queue there, after their deployment was
    chosen."""
    router = Router(Deployment({"model": "a"}, name="a", rpm=1_000, timeout=timeout),
                    Deployment({"model": "b"}, name="b", rpm=1_000),
                    strategy="ordered", **options)
    return router, lg.Pipeline().then(router).concurrency_limit(1).wrap(provider.acompletion)


async def test_calls_queued_below_longer_than_the_timeout_are_not_expired() -> None:
    """Three calls at once to a deployment with timeout=2 s whose answers take 1.5 s, behind a
    ConcurrencyLimit(1): the third waits 3 s in that queue, the second 1.5 s and then 1.5 s at
    the provider. Every one is answered by "a", each sent once, one after the other; none is
    cancelled at the provider or moved to "b"."""
    provider = Provider(latency=1.5)
    router, chat = routed(provider)
    with lg.recording() as records:
        answers = await asyncio.gather(*(chat(model="m", prompt=str(i)) for i in range(3)))
    assert answers == ["a: 0", "a: 1", "a: 2"]
    assert provider.sent == [("a", 0.0), ("a", 1.5), ("a", 3.0)]
    assert now() == pytest.approx(4.5)
    assert [(r.deployment, r.sent) for r in records] == [("a", 1)] * 3
    stats = router.statistics()
    assert stats.failovers == 0 and stats.deployments["a"].failed == 0


async def test_a_hung_deployment_fails_over_timeout_seconds_after_the_send() -> None:
    """"a" never answers (timeout=2 s). A holder sent there at 0 s moves to "b" at 2 s; the
    call queued below behind it is sent to "a" at 2 s and moves to "b" at 4 s: 2 s after its
    send, not after its choice (which would have moved it, never sent, at 2 s)."""
    provider = Provider(latency=0, hung=("a",))
    router, chat = routed(provider)
    hold = asyncio.create_task(chat(model="m", prompt="holder"))
    await asyncio.sleep(0)
    with lg.recording() as records:
        answer = await chat(model="m", prompt="late")
    assert answer == "b: late"
    assert provider.sent[:2] == [("a", 0.0), ("a", 2.0)]
    assert now() == pytest.approx(4.0)
    assert records[0].deployment == "b" and records[0].sent == 2
    assert await hold == "b: holder"
    assert router.statistics().failovers == 2
    assert provider.in_flight == 0


async def test_the_timeout_error_names_the_deployment_and_counts_from_the_send() -> None:
    """With nowhere else to go, the attempt's TimeoutExceeded reaches the caller: it says the
    attempt took longer than 2 s after it was sent and names the deployment's setting."""
    provider = Provider(latency=0, hung=("a",))
    router = Router(Deployment({"model": "a"}, name="a", rpm=1_000, timeout=2))
    chat = lg.Pipeline().then(router).concurrency_limit(1).wrap(provider.acompletion)
    first = asyncio.create_task(chat(model="m", prompt="first"))
    await asyncio.sleep(0)
    setting = r"\(Deployment\(name='a', timeout=2\)\)"
    with pytest.raises(lg.TimeoutExceeded, match=r"longer than 2 s after it was sent " + setting):
        await chat(model="m", prompt="second")
    assert now() == pytest.approx(4.0)  # queued 2 s behind the first, then 2 s at "a"
    with pytest.raises(lg.TimeoutExceeded):
        await first


async def test_the_overall_deadline_ends_a_queued_attempt_without_moving_it() -> None:
    """Retry(deadline=3) above the Router: an attempt still queued below at 3 s ends with
    AdmissionTimeout (never sent, so not moved to "b" and not counted by "a"'s circuit)."""
    provider = Provider(latency=10)
    router = Router(Deployment({"model": "a"}, name="a", rpm=1_000, timeout=20),
                    Deployment({"model": "b"}, name="b", rpm=1_000), strategy="ordered")
    chat = (lg.Pipeline().retry(attempts=2, deadline=3).then(router).concurrency_limit(1)
            .wrap(provider.acompletion))
    first = asyncio.create_task(chat(model="m", prompt="first"))
    await asyncio.sleep(0)
    with pytest.raises(lg.AdmissionTimeout):
        await chat(model="m", prompt="queued")
    assert now() == pytest.approx(3.0)
    assert await first == "a: first"  # sent before the deadline: runs to its answer at 10 s
    assert provider.sent == [("a", 0.0)]
    assert router.statistics().failovers == 0
    assert router.deployments[0].circuit.statistics().failures == 0


async def test_a_caller_cancelled_at_each_await_point_stays_cancelled() -> None:
    """Counted, not timed (``cancel_points``): a call queued below the Router behind a holder,
    cancelled at each of its await points in turn (in the queue, inside the provider), ends
    cancelled, never as a timeout or on another deployment; the router's gauges are back to
    baseline and nothing of its attempt fires later: a call after it runs its full 1.5 s at
    "a"."""
    for n in range(100):
        provider = Provider(latency=1.5)
        router, chat = routed(provider)
        holder = asyncio.create_task(chat(model="m", prompt="holder"))
        await asyncio.sleep(0.1)
        point, victim = start_cancelled_at(n, lambda: chat(model="m", prompt="victim"))
        ended = await outcome(victim)
        if point.reached:
            assert isinstance(ended, asyncio.CancelledError), (n, ended)
        else:
            assert ended == "a: victim"
        assert await holder == "a: holder"
        start = now()
        assert await chat(model="m", prompt="after") == "a: after"
        assert now() - start == pytest.approx(1.5)
        stats = router.statistics()
        assert (stats.in_flight, stats.waiting, stats.failovers) == (0, 0, 0)
        assert all(model == "a" for model, _ in provider.sent)
        if not point.reached:
            break
    assert n >= 2  # queued below and inside the provider at least


async def test_timeouts_at_a_hung_deployment_open_its_circuit() -> None:
    """A timeout there is a failure of that deployment (its circuit sits above its timeout, as
    CircuitBreaker above Timeout in the recommended order): after five calls each timed out
    at "a" (1 s) and answered by "b", "a"'s circuit is open and the next call goes straight to
    "b"."""
    provider = Provider(latency=0, hung=("a",))
    router, chat = routed(provider, timeout=1)
    for i in range(5):
        start = now()
        assert await chat(model="m", prompt=str(i)) == f"b: {i}"
        assert now() - start == pytest.approx(1.0)
    assert router.statistics().deployments["a"].circuit == "open"
    start = now()
    assert await chat(model="m", prompt="next") == "b: next"
    assert now() == start
