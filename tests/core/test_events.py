"""The typed call record and the event channel: what each layer writes, what subscribers get.

Each event kind is produced by the real layer, alone and inside the README's stack against a
simulated fixed-window server; the record a runner reads (``llmguard.recording()``, batch
``Outcome.calls``, ``llmguard run`` records) comes from the same writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import llmguard as lg
from llmguard._core import events
from llmguard.testing import FixedWindowServer, RateLimited, make_error

EV = lg.EventKind


class Flaky:
    """Fails the first ``failures`` calls with a 429 (Retry-After ``retry_after``), then answers;
    ``overloaded`` every second failure is a 503 instead (what opens a circuit)."""

    def __init__(self, failures: int, retry_after: float = 2.0, overloaded: bool = False) -> None:
        self.failures, self.retry_after, self.calls = failures, retry_after, 0
        self.overloaded = overloaded

    async def __call__(self, prompt: str, model: str = "primary") -> str:
        self.calls += 1
        number = self.calls
        await asyncio.sleep(0.1)
        if number <= self.failures:
            if self.overloaded and number % 2 == 0:
                raise make_error(lg.FailureKind.OVERLOADED)
            raise RateLimited("slow down", status_code=429,
                              headers={"retry-after": str(self.retry_after)})
        return f"{model}: {prompt}"


@pytest.fixture
def seen() -> Any:
    got: list[lg.Event] = []
    with lg.subscribe(got.append):
        yield got


async def test_retry_scheduled_carries_delay_error_and_the_record(seen: list[lg.Event]) -> None:
    flaky = Flaky(failures=2)
    guarded = lg.Pipeline(name="chat").retry(attempts=4, max_delay=10).wrap(flaky)
    with lg.recording() as calls:
        assert await guarded("hi") == "primary: hi"
    (record,) = calls
    retries = [e for e in seen if e.kind is EV.RETRY_SCHEDULED]
    assert [e.attempt for e in retries] == [1, 2]
    assert all(isinstance(e.error, RateLimited) and e.delay >= 2.0 for e in retries)
    assert all(e.record is record and e.pipeline == "chat" and e.layer == "retry" for e in retries)
    assert record.retries == 2 and record.sent == 3 and list(record.delays) == [e.delay for e in retries]
    assert record.error is None and record.latency is None  # invoke does not time (runners do)


async def test_fallback_taken_names_the_alternate_and_the_models_tried(seen: list[lg.Event]) -> None:
    guarded = lg.Pipeline().fallback({"model": "backup"}).wrap(Flaky(failures=1))
    with lg.recording() as calls:
        assert await guarded("hi", model="primary") == "backup: hi"
    (event,) = seen
    assert (event.kind, event.detail, type(event.error)) == (EV.FALLBACK_TAKEN, "model=backup",
                                                            RateLimited)
    assert calls[0].fallback == "model=backup"
    assert calls[0].models == ("primary", "backup") and calls[0].sent == 2


async def test_circuit_transitions_are_published(seen: list[lg.Event]) -> None:
    breaker = lg.CircuitBreaker(min_calls=2, failure_ratio=0.5, window=10, open_for=5,
                                half_open_calls=1, name="provider")
    flaky = Flaky(failures=2, retry_after=0, overloaded=True)  # a 429, then a 503
    guarded = lg.guard(breaker)(flaky)
    for _ in range(2):
        with pytest.raises(Exception):
            await guarded("x")
    with pytest.raises(lg.CircuitOpenError):
        await guarded("x")
    await asyncio.sleep(5)
    assert await guarded("x") == "primary: x"  # the probe succeeds: closed
    kinds = [e.kind for e in seen if e.layer == "circuit_breaker"]
    assert kinds == [EV.CIRCUIT_OPENED, EV.ADMISSION_REJECTED, EV.CIRCUIT_HALF_OPEN,
                     EV.CIRCUIT_CLOSED]
    assert {e.detail for e in seen if e.kind is not EV.ADMISSION_REJECTED} == {"provider"}


async def test_rate_limit_paused_by_a_429(seen: list[lg.Event]) -> None:
    limit = lg.RateLimit(rpm=600)
    guarded = lg.guard(lg.Retry(attempts=2), limit)(Flaky(failures=1, retry_after=7))
    assert await guarded("x") == "primary: x"
    (paused,) = [e for e in seen if e.kind is EV.RATE_LIMIT_PAUSED]
    assert paused.delay == 7 and paused.layer == "rate_limit"
    assert limit.statistics().rate_limited == 1


async def test_cache_hits_and_coalesced_callers(seen: list[lg.Event]) -> None:
    flaky = Flaky(failures=0)
    guarded = lg.Pipeline().cache(ttl=60).wrap(flaky)
    with lg.recording() as calls:
        await asyncio.gather(guarded("a"), guarded("a"))  # the second waits on the first
        await guarded("a")
    assert [r.cache for r in calls] == ["miss", "coalesced", "hit"]
    assert [e.detail for e in seen if e.kind is EV.CACHE_HIT] == ["coalesced", "hit"]
    assert [r.sent for r in calls] == [1, 0, 0] and flaky.calls == 1
    assert [r.billable for r in calls] == [True, False, False]


async def test_admission_rejected_names_the_layer(seen: list[lg.Event]) -> None:
    slow = Flaky(failures=0)
    queue = lg.guard(lg.ConcurrencyLimit(1, max_queue=1))(slow)
    tokens = lg.guard(lg.RateLimit(tpm=100, tokens=lambda *a, **k: 500))(slow)
    waiting = lg.guard(lg.RateLimit(rpm=1, max_wait=5))(slow)
    with lg.recording() as calls:
        results = await asyncio.gather(queue("a"), queue("b"), queue("b2"), tokens("c"),
                                       waiting("d"), waiting("e"), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["str", "str", "QueueFull", "RequestTooLarge",
                                                   "str", "AdmissionTimeout"]
    assert [r.rejected_by for r in calls] == [None, None, "concurrency_limit", "rate_limit", None,
                                              "rate_limit"]
    assert [r.error is None for r in calls] == [True, True, False, False, True, False]
    assert calls[1].delayed_by == "concurrency_limit" and calls[1].wait == pytest.approx(0.1)
    rejected = [e for e in seen if e.kind is EV.ADMISSION_REJECTED]
    assert [type(e.error).__name__ for e in rejected] == ["QueueFull", "RequestTooLarge",
                                                          "AdmissionTimeout"]
    assert [r.sent for r in calls] == [1, 1, 0, 0, 1, 0]


async def test_kinds_filter_unsubscribe_and_a_failing_subscriber(caplog: Any) -> None:
    retries: list[lg.Event] = []
    later: list[lg.Event] = []

    def broken(event: lg.Event) -> None:
        raise RuntimeError("subscriber bug")

    async def slow_async(event: lg.Event) -> None:
        await asyncio.sleep(10)
        later.append(event)

    guarded = lg.Pipeline().cache(ttl=60).retry(attempts=3, max_delay=10).wrap(Flaky(failures=1))
    with lg.subscribe(retries.append, "retry_scheduled"), lg.subscribe(broken), \
            lg.subscribe(slow_async, EV.RETRY_SCHEDULED):
        with caplog.at_level(logging.ERROR, logger="llmguard.events"):
            assert await guarded("x") == "primary: x"  # neither subscriber broke the call
            assert await guarded("x") == "primary: x"  # a cache hit: not a retry
        assert [e.kind for e in retries] == [EV.RETRY_SCHEDULED]
        assert not later  # the async subscriber runs on its own, not inside the call
        await asyncio.sleep(10)
        assert later == retries
    assert "subscriber bug" in caplog.text
    assert not events.subscribers  # all three closed on leaving the block


def test_subscribe_refuses_bad_input() -> None:
    with pytest.raises(TypeError, match="callable"):
        lg.subscribe("not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event kind.*retry_scheduled"):
        lg.subscribe(print, "retry_sheduled")
    assert not events.subscribers


async def test_no_subscriber_builds_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nobody subscribed the layers never construct or emit an event."""
    built: list[Any] = []
    monkeypatch.setattr(events, "emit", built.append)
    monkeypatch.setattr("llmguard._core.call.Event", lambda *a: built.append(a))
    breaker = lg.CircuitBreaker(min_calls=1, window=10, open_for=1)
    guarded = lg.guard(lg.Cache(ttl=60), lg.Fallback({"model": "backup"}), lg.Retry(attempts=2),
                       breaker, lg.RateLimit(rpm=600))(Flaky(failures=3, overloaded=True))
    results = await asyncio.gather(*(guarded("x") for _ in range(3)), return_exceptions=True)
    assert any(isinstance(r, lg.FallbackExhausted) for r in results)  # every kind happened
    assert built == []


async def test_readme_stack_events_agree_with_statistics(seen: list[lg.Event]) -> None:
    """The README stack against a fixed-window server without Retry-After, demand 2x the
    quota: every call succeeds, and what subscribers counted is what each layer's own
    statistics and the records say."""
    server = FixedWindowServer(rpm=30, tpm=1_000_000, latency=1.0, retry_after=False)
    retry = lg.Retry(attempts=4, max_delay=30)
    limit = lg.RateLimit(rpm=40)  # above the server's quota: 429s, pauses and retries
    pipeline = (lg.Pipeline(name="readme").metrics().cache(ttl=300)
                .fallback({"model": "backup"}).then(retry).circuit_breaker(min_calls=1000)
                .timeout(30).then(limit).concurrency_limit(8))
    guarded = pipeline.wrap(server.acompletion)
    with lg.recording() as calls:
        results = await asyncio.gather(*(guarded(model="m", max_tokens=8, messages=[
            {"role": "user", "content": f"q{i % 50}"}]) for i in range(60)))
    assert all(r["choices"] for r in results)
    count = {kind: sum(e.kind is kind for e in seen) for kind in EV}
    assert count[EV.RETRY_SCHEDULED] == retry.statistics().retries == sum(r.retries for r in calls)
    assert count[EV.RETRY_SCHEDULED] > 0
    assert count[EV.RATE_LIMIT_PAUSED] == limit.statistics().rate_limited > 0
    assert count[EV.CACHE_HIT] == sum(r.cache in ("hit", "coalesced") for r in calls) == 10
    assert sum(r.sent for r in calls) == server.statistics().arrivals
    assert count[EV.ADMISSION_REJECTED] == count[EV.FALLBACK_TAKEN] == 0


async def test_batch_outcomes_carry_each_items_records() -> None:
    """An item's Outcome holds the records of the guarded calls it made (two per item here),
    and ``attempts`` counts them with their retries; items of other workers never mix in."""
    flaky = Flaky(failures=1)
    guarded = lg.Pipeline().retry(attempts=3, max_delay=10).wrap(flaky)

    async def two_calls(item: int) -> str:
        first = await guarded(f"a{item}")
        return first + await guarded(f"b{item}")

    outcomes = await lg.batch(two_calls, range(4), concurrency=4, progress=False,
                              keep_records=True)
    assert all(o.ok and len(o.calls) == 2 for o in outcomes)
    assert sum(r.retries for o in outcomes for r in o.calls) == 1  # the one 429
    assert sorted(o.attempts for o in outcomes) == [2, 2, 2, 3]
    assert sum(r.sent for o in outcomes for r in o.calls) == flaky.calls == 9


def test_circuit_forced_by_hand_is_published(seen: list[lg.Event]) -> None:
    breaker = lg.CircuitBreaker(name="provider")
    breaker.force_open()
    breaker.force_close()
    assert [(e.kind, e.record, e.detail) for e in seen] == [
        (EV.CIRCUIT_OPENED, None, "provider"), (EV.CIRCUIT_CLOSED, None, "provider")]


def test_closing_a_subscription_twice_leaves_the_others_alone() -> None:
    """#35 item 7: close() is idempotent and removes only its own subscription, even when
    another one subscribed the same callback (a second close used to remove that one)."""
    got: list[lg.Event] = []
    first = lg.subscribe(got.append)
    second = lg.subscribe(got.append)
    first.close()
    first.close()
    assert len(events.subscribers) == 1
    lg.CircuitBreaker(name="c").force_open()
    assert len(got) == 1
    second.close()
    assert not events.subscribers


def test_closing_many_subscriptions_is_linear() -> None:
    """Closing 20,000 subscriptions, out of order and twice each, empties the table: it is a
    dict keyed by subscription (one O(1) pop per close), not a list scanned by every close
    (quadratic: 11-17 s for 20k). Structure, not time, is asserted."""
    subscriptions = [lg.subscribe(print) for _ in range(20_000)]
    for subscription in subscriptions[::2] + subscriptions[1::2]:
        subscription.close()
        subscription.close()
    assert not events.subscribers
    assert isinstance(events.subscribers, dict)


async def test_a_stream_that_fails_mid_way_records_its_error() -> None:
    """#35 item 7: a streamed answer that fails after its first chunk ends the call with that
    error, and the record says so (``record.error``), for an async generator and for a
    function returning a stream alike."""

    async def story(prompt: str):
        yield "once"
        await asyncio.sleep(0.1)
        raise RateLimited("slow down", status_code=429, headers={})

    async def returns_stream(prompt: str):
        return story(prompt)

    for fn in (story, returns_stream):
        guarded = lg.Pipeline().retry(attempts=2).wrap(fn)
        with lg.recording() as calls:
            stream = guarded("x")
            if fn is returns_stream:
                stream = await stream
            chunks = []
            with pytest.raises(RateLimited):
                async for chunk in stream:
                    chunks.append(chunk)
        assert chunks == ["once"] and calls[0].error == "rate_limited", fn


async def test_batch_keeps_records_only_when_asked() -> None:
    """By default an Outcome keeps no records (a million of them would be most of a batch's
    memory) yet still counts the attempts; ``keep_records=True`` or an active ``recording()``
    keeps them; a non-bool ``keep_records`` is refused at the call."""
    flaky = Flaky(failures=1)
    guarded = lg.Pipeline().retry(attempts=3, max_delay=10).wrap(flaky)
    plain = await lg.batch(guarded, ["a", "b"], concurrency=1, progress=False)
    assert [o.calls for o in plain] == [(), ()] and [o.attempts for o in plain] == [2, 1]
    with lg.recording():
        recorded = await lg.batch(guarded, ["c"], progress=False)
    assert [len(o.calls) for o in recorded] == [1] and recorded[0].calls[0].sent == 1
    async for o in lg.batch_iter(guarded, ["d"], progress=False, keep_records=True):
        assert o.ok and len(o.calls) == 1
    with pytest.raises(TypeError, match="keep_records"):
        lg.batch_iter(guarded, ["e"], keep_records="yes")
