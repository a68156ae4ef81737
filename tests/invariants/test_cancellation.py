"""Cancellation, table-driven over every layer: cancel a caller at each await point, then the
layer's statistics are back to baseline and the next call proceeds."""

import asyncio

import aiolimiter
import cachetools
import pytest
from cancel_points import outcome, start_cancelled_at

import llmguard as lg
from llmguard import FailureKind
from llmguard.testing import FakeLLM, make_error

#: Statistics fields that are state (must return to baseline), not cumulative counters.
GAUGES = ("in_flight", "waiting", "reserved_tokens", "reserved_usd", "size",
          "requests_available", "tokens_available", "state")

LAYERS = {
    "ConcurrencyLimit": lambda: lg.ConcurrencyLimit(1),
    "AdaptiveConcurrency": lambda: lg.AdaptiveConcurrency(initial=1, min=1, max=1),
    "RateLimit": lambda: lg.RateLimit(rpm=1, tpm=100_000),
    "RateLimit(input/output)": lambda: lg.RateLimit(rpm=1, input_tpm=100_000, output_tpm=10_000),
    "Cache": lambda: lg.Cache(ttl=60),
    "Retry": lambda: lg.Retry(attempts=3, backoff=4),
    "Timeout": lambda: lg.Timeout(30),
    "Fallback": lambda: lg.Fallback(FakeLLM(latency=10).send_message),
    "CircuitBreaker": lambda: lg.CircuitBreaker(min_calls=5),
    "Metrics": lambda: lg.Metrics(name="cancel"),
    # The first call fails over from "a" to "b" (its one slot), so the victim waits in line.
    "Router": lambda: lg.Router(lg.Deployment({"deployment": "a"}, name="a", rpm=1),
                                lg.Deployment({"deployment": "b"}, name="b", concurrency=1),
                                strategy="ordered"),
    # Every call times out at "a" (3 s from its send) and moves to "b" (its one slot).
    "Router(timeout)": lambda: lg.Router(
        lg.Deployment({"deployment": "a"}, name="a", rpm=1000, timeout=3),
        lg.Deployment({"deployment": "b"}, name="b", concurrency=1), strategy="ordered"),
    # What users already hold, as they pass it: an aiolimiter limiter as a layer, a cachetools
    # cache as a Cache store.
    "aiolimiter.AsyncLimiter": lambda: aiolimiter.AsyncLimiter(1, 60),
    "Cache on cachetools.LRUCache": lambda: lg.Cache(ttl=60, store=cachetools.LRUCache(100)),
    # Room for three answers without usage (each charged its reservation of ~4,150 tokens).
    "Budget": lambda: lg.Budget(3.5 * 4150 / 1e6, prices={"*": (1.0, 1.0)}),
}


def gauges(layer) -> dict:
    stats = layer.statistics()
    found = {name: getattr(stats, name) for name in GAUGES if hasattr(stats, name)}
    for name, one in getattr(stats, "deployments", {}).items():  # a Router's, each its own
        found[name] = {field: getattr(one, field) for field in GAUGES if hasattr(one, field)}
    return found


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("cancel_at", [0.0, 1.0, 5.0, 12.0])
async def test_cancel_at_every_await_point(name: str, cancel_at: float) -> None:
    """Cancel while admitted-and-waiting (0 s), inside the provider (1 s), during a backoff or
    a second attempt (5 s) and while queued behind a slow first call (12 s): no permit, token,
    single-flight entry or in-flight count leaks, and a later call succeeds."""
    # The first call keeps the provider busy (or fails once, so Retry/Fallback act), the second
    # is the one we cancel; both share the layer (as the pipeline holds it).
    llm = FakeLLM([make_error(FailureKind.OVERLOADED)], latency=10)
    guarded = lg.guard(LAYERS[name]())(llm.send_message)
    layer = guarded.pipeline.layers[0]
    baseline = gauges(layer)
    first = asyncio.create_task(guarded("first"))
    await asyncio.sleep(0.5)
    victim = asyncio.create_task(guarded("victim"))
    await asyncio.sleep(cancel_at)
    if victim.done():  # this layer let it finish before that await point: nothing to cancel
        await asyncio.gather(victim, return_exceptions=True)
    else:
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(120)  # quota windows, backoffs and timers run out
    assert gauges(layer) == baseline
    assert await guarded("after") == "echo: after"
    assert llm.in_flight == 0


#: Layers that hand out slots in memory (the in-process path of #31's shared slots).
SLOTS = {
    "Router": lambda: lg.Router(lg.Deployment({"deployment": "a"}, name="a", rpm=1000,
                                              concurrency=1)),
    "ConcurrencyLimit": lambda: lg.ConcurrencyLimit(1),
    "AdaptiveConcurrency": lambda: lg.AdaptiveConcurrency(initial=1, min=1, max=1),
}


@pytest.mark.parametrize("name", sorted(SLOTS))
async def test_a_slot_taker_cancelled_at_each_of_its_await_points_hands_the_slot_on(name):
    """Counted, not timed (``cancel_points``): a call that waits for the one slot behind a
    holder is cancelled at each of its await points in turn (in line, granted, inside the
    provider). It ends cancelled, the slot goes to the call queued behind it, and the gauges
    are back to baseline; past the last point it answers."""
    for n in range(100):
        guarded = lg.guard(SLOTS[name]())(FakeLLM(latency=1).send_message)
        layer = guarded.pipeline.layers[0]
        baseline = gauges(layer)
        holder = asyncio.create_task(guarded("holder"))
        await asyncio.sleep(0.1)
        point, victim = start_cancelled_at(n, lambda: guarded("victim"))
        await asyncio.sleep(0.1)
        behind = asyncio.create_task(guarded("behind"))
        ended = await outcome(victim)
        if point.reached:
            assert isinstance(ended, asyncio.CancelledError), (n, ended)
        else:
            assert ended == "echo: victim"
        assert [await holder, await behind] == ["echo: holder", "echo: behind"]
        await asyncio.sleep(120)  # the quota window of the calls sent runs out
        assert gauges(layer) == baseline
        if not point.reached:
            break
    assert n >= 2  # in line and inside the provider at least
