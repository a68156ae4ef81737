"""Streams through every layer: permits return however a stream ends; retry and fallback act
only before the first chunk; the three stream timeouts; cache replay; stream metrics."""

import asyncio
import gc

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from test_cancellation import gauges
from otel_helpers import collect

import llmguard as lg
from llmguard.testing import FakeLLM

STREAM_LAYERS = {
    "ConcurrencyLimit": lambda: lg.ConcurrencyLimit(1),
    "AdaptiveConcurrency": lambda: lg.AdaptiveConcurrency(initial=1, min=1, max=1),
    "RateLimit": lambda: lg.RateLimit(rpm=100, tpm=100_000),
    "Cache": lambda: lg.Cache(ttl=60),
    "Retry": lambda: lg.Retry(attempts=3),
    "Timeout": lambda: lg.Timeout(first_chunk=5, idle=5, total=60),
    "Fallback": lambda: lg.Fallback(FakeLLM().stream_message),
    "CircuitBreaker": lambda: lg.CircuitBreaker(min_calls=5),
    "Metrics": lambda: lg.Metrics(name="streams"),
    "Budget": lambda: lg.Budget(1.0, prices={"*": (1.0, 1.0)}),
}


class Speaker:
    """A streaming provider that counts open streams and can fail after some chunks."""

    def __init__(self) -> None:
        self.open = 0
        self.started = 0

    async def speak(self, prompt: str, fail_after: int | None = None):
        self.open += 1
        self.started += 1
        try:
            for i in range(4):
                if i == fail_after:
                    raise ConnectionError(f"stream broke after {i} chunks")
                await asyncio.sleep(1)
                yield f"{prompt}-{i} "
        finally:
            self.open -= 1


async def settle() -> None:
    """Let the event loop finalise abandoned generators (asyncgen hooks run as tasks)."""
    gc.collect()
    for _ in range(10):
        await asyncio.sleep(0)


async def end_by_break(guarded) -> None:
    agen = guarded("p")
    async for _ in agen:
        break
    await agen.aclose()


async def end_by_cancel(guarded) -> None:
    async def consume() -> None:
        async for _ in guarded("p"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(2.5)  # after the first chunk, while waiting for the third
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def end_by_error(guarded) -> None:
    seen = []
    with pytest.raises(ConnectionError):
        async for chunk in guarded("p", fail_after=2):
            seen.append(chunk)
    assert seen == ["p-0 ", "p-1 "]  # delivered before the error, which was not retried


async def end_by_abandon(guarded) -> None:
    agen = guarded("p")
    assert await agen.__anext__() == "p-0 "
    del agen


ENDINGS = {"break": end_by_break, "cancel": end_by_cancel, "error": end_by_error,
           "abandon": end_by_abandon}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
@pytest.mark.parametrize("name", sorted(STREAM_LAYERS))
async def test_every_layer_gives_back_what_it_holds_when_a_stream_ends_early(name, ending):
    """A consumer that breaks out, is cancelled, meets an error midway or drops the stream:
    the layer's permits, reservations, single-flight entries and in-flight counts return, the
    source generator is closed, and the next stream is served whole."""
    layer = STREAM_LAYERS[name]()
    speaker = Speaker()
    guarded = lg.guard(layer)(speaker.speak)
    baseline = gauges(layer)
    await ENDINGS[ending](guarded)
    await settle()
    await asyncio.sleep(120)  # quota windows and timers run out
    assert gauges(layer) == baseline
    assert speaker.open == 0
    assert [chunk async for chunk in guarded("next")] == [f"next-{i} " for i in range(4)]
    await settle()
    await asyncio.sleep(120)
    assert {k: v for k, v in gauges(layer).items() if k != "size"} == {
        k: v for k, v in baseline.items() if k != "size"}  # (the complete stream was cached)


async def test_failure_before_the_first_chunk_falls_back_and_after_it_does_not() -> None:
    """Fallback moves on when the primary fails before its first chunk; once a chunk reached
    the consumer, a later failure propagates unchanged and the alternate is never called."""
    backup = FakeLLM(reply_prefix="backup: ")
    speaker = Speaker()
    guarded = lg.guard(lg.Fallback(backup.stream_message))(speaker.speak)
    assert "".join([c async for c in guarded("a", fail_after=0)]) == "backup: a"
    assert backup.call_count == 1
    seen = []
    with pytest.raises(ConnectionError):
        async for chunk in guarded("b", fail_after=1):
            seen.append(chunk)
    assert seen == ["b-0 "] and backup.call_count == 1


async def test_retry_retries_before_the_first_chunk_only() -> None:
    """A failure before the first chunk is retried; one after it is not."""
    llm = FakeLLM([ConnectionError("refused")])
    retry = lg.Retry(attempts=3, backoff=0.1)
    guarded = lg.guard(retry)(llm.stream_message)
    assert "".join([c async for c in guarded("x")]) == "echo: x"
    assert llm.call_count == 2
    speaker = Speaker()
    with pytest.raises(ConnectionError):
        async for _ in lg.guard(retry)(speaker.speak)("y", fail_after=1):
            pass
    assert speaker.started == 1


async def slow_start(prompt: str):
    await asyncio.sleep(10)
    yield "late"


async def stalls(prompt: str):
    yield "one "
    await asyncio.sleep(3600)
    yield "never"


async def test_first_chunk_timeout_fires_inside_the_pipeline_where_retry_acts() -> None:
    """No first chunk within ``first_chunk``: FirstChunkTimeout, which Retry retries."""
    timeout = lg.Timeout(first_chunk=2)
    with pytest.raises(lg.FirstChunkTimeout, match="first_chunk=2"):
        async for _ in lg.guard(timeout)(slow_start)("x"):
            pass
    start = asyncio.get_running_loop().time()
    retry = lg.Retry(attempts=2, backoff=0.1)
    with pytest.raises(lg.FirstChunkTimeout):
        async for _ in lg.guard(retry, timeout)(slow_start)("x"):
            pass
    assert retry.statistics().retries == 1
    assert asyncio.get_running_loop().time() - start == pytest.approx(4, abs=0.2)


async def test_idle_timeout_fires_mid_stream_and_closes_the_source() -> None:
    """A stream silent for longer than ``idle`` after a chunk: StreamIdleTimeout to the
    consumer after the chunks it got; the concurrency slot is back."""
    limit = lg.ConcurrencyLimit(1)
    guarded = lg.guard(lg.Timeout(30, idle=5), limit)(stalls)
    seen = []
    with pytest.raises(lg.StreamIdleTimeout, match="idle=5") as caught:
        async for chunk in guarded("x"):
            seen.append(chunk)
    assert seen == ["one "] and caught.value.seconds == 5
    assert isinstance(caught.value, TimeoutError)
    assert limit.statistics().in_flight == 0


async def test_total_timeout_bounds_the_whole_stream() -> None:
    """Chunks keep coming but the stream outlives ``total``: StreamTotalTimeout."""
    llm = FakeLLM(latency=1, seconds_per_token=2)
    guarded = lg.guard(lg.Timeout(idle=5, total=6))(llm.stream_message)
    seen = []
    with pytest.raises(lg.StreamTotalTimeout, match="total=6"):
        async for chunk in guarded("a b c d e f g"):
            seen.append(chunk)
    assert 1 < len(seen) < 8 and llm.in_flight == 0


async def test_cache_replays_a_completed_stream_and_never_stores_an_incomplete_one() -> None:
    """A stream read to its end is stored and replayed as a stream; one the consumer left
    early is not stored."""
    cache = lg.Cache(ttl=60)
    speaker = Speaker()
    guarded = lg.guard(cache)(speaker.speak)
    await end_by_break(guarded)
    assert cache.statistics().size == 0
    first = [c async for c in guarded("p")]
    again = guarded("p")
    assert [c async for c in again] == first and speaker.started == 2
    assert cache.statistics().hits == 1


async def test_identical_concurrent_streams_share_one_provider_stream() -> None:
    """Calls that coalesce on one stream each read every chunk; one reader leaving early does
    not cut the others short."""
    cache = lg.Cache(ttl=60)
    speaker = Speaker()
    guarded = lg.guard(cache)(speaker.speak)

    async def read_all():
        return [c async for c in guarded("p")]

    results = await asyncio.gather(read_all(), end_by_break(guarded), read_all())
    assert results[0] == results[2] == [f"p-{i} " for i in range(4)]
    assert speaker.started == 1 and cache.statistics().coalesced == 2
    await settle()
    assert speaker.open == 0 and cache.statistics().size == 1


async def test_a_truncated_stream_is_not_cached() -> None:
    """A completion stream that ended with ``finish_reason == "length"`` is not stored."""
    async def truncated(prompt: str):
        yield {"choices": [{"delta": {"content": "half"}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "length"}]}

    cache = lg.Cache(ttl=60)
    async for _ in lg.guard(cache)(truncated)("p"):
        pass
    assert cache.statistics().size == 0


async def test_rate_limit_reconciles_a_stream_to_its_final_chunk_usage() -> None:
    """The token reservation is held for the whole stream and then settled to the usage the
    final chunk reports (a sliding log: the default ``refill="auto"`` keeps what a server that
    reports no tokens was reserved until it is known to give the unused part back)."""
    limit = lg.RateLimit(tpm=10_000, refill="window")
    llm = FakeLLM(latency=1, seconds_per_token=1)
    guarded = lg.guard(limit)(llm.acompletion)
    stream = await guarded(model="m", messages=[{"role": "user", "content": "hello"}],
                           max_tokens=500, stream=True, stream_options={"include_usage": True})
    assert limit.statistics().reserved_tokens > 500
    chunks = [c async for c in stream]
    used = chunks[-1]["usage"]["total_tokens"]
    stats = limit.statistics()
    assert stats.reserved_tokens == 0 and stats.tokens_available == 10_000 - used


async def test_metrics_record_time_to_first_chunk_per_chunk_and_full_duration() -> None:
    """Streams record gen_ai.client.operation.time_to_first_chunk once, time_per_output_chunk
    for each chunk after the first, and the duration when the stream ends."""
    reader = InMemoryMetricReader()
    metrics = lg.Metrics(meter_provider=MeterProvider(metric_readers=[reader]))
    llm = FakeLLM(latency=1.5, seconds_per_token=0.5)
    guarded = lg.guard(metrics)(llm.stream_message)
    pieces = [c async for c in guarded("a b c")]  # "echo: ", "a ", "b ", "c"
    found = collect(reader)
    (first,) = found["gen_ai.client.operation.time_to_first_chunk"].data.data_points
    assert first.count == 1 and first.sum == pytest.approx(1.5)
    (per,) = found["gen_ai.client.operation.time_per_output_chunk"].data.data_points
    assert per.count == len(pieces) - 1 and per.sum == pytest.approx(1.5)
    (duration,) = found["gen_ai.client.operation.duration"].data.data_points
    assert duration.sum == pytest.approx(3.0)
    assert metrics.statistics().successes == 1 and metrics.statistics().in_flight == 0


async def test_agent_pool_holds_a_member_until_its_stream_ends() -> None:
    """A pool member serving a stream stays busy until the consumer finishes it."""
    pool = lg.AgentPool([FakeLLM(seconds_per_token=1), FakeLLM(seconds_per_token=1)],
                        method="stream_message")
    stream = await pool("a b c")
    assert sum(m.busy for m in pool.statistics().members) == 1
    assert "".join([c async for c in stream]) == "echo: a b c"
    assert sum(m.busy for m in pool.statistics().members) == 0


@settings(max_examples=40, deadline=None)
@given(cancels=st.lists(st.one_of(st.none(), st.floats(0, 5)), min_size=2, max_size=4))
def test_cancelling_any_reader_of_a_shared_stream_leaves_the_others_their_answer(cancels) -> None:
    """Property (issue 21 #4): identical concurrent streams share one provider stream; whichever
    readers are cancelled, at whatever instant (including the one fetching a chunk), every
    other reader gets the whole answer, the provider stream is opened once (twice when the
    first caller, which opens it inline, is cancelled before its first chunk: a reader still
    waiting opens it again) and closed at the end, and a complete answer is cached."""
    async def scenario() -> None:
        cache = lg.Cache(ttl=60)
        speaker = Speaker()
        guarded = lg.guard(cache)(speaker.speak)

        async def read_all():
            return [c async for c in guarded("p")]

        tasks = [asyncio.create_task(read_all()) for _ in cancels]
        loop = asyncio.get_running_loop()
        for task, at in zip(tasks, cancels):
            if at is not None:
                loop.call_later(at, task.cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        answer = [f"p-{i} " for i in range(4)]
        for result in results:
            assert result == answer or isinstance(result, asyncio.CancelledError), result
        if any(r == answer for r in results):
            assert speaker.started == 1 if cancels[0] is None else speaker.started <= 2
            assert cache.statistics().size == 1
        await settle()
        assert speaker.open == 0

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


@pytest.mark.parametrize("outer", ["rate_limit", "metrics"])
async def test_a_stream_dropped_unread_is_freed_without_the_cyclic_collector(outer: str) -> None:
    """The layers that follow a stream to its end (RateLimit reading its final usage chunk,
    Metrics) hold it weakly: dropped unread, with the cyclic collector off, its reservation and
    the concurrency permit below come back at once."""

    async def chunks(prompt: str):
        for word in prompt.split():
            await asyncio.sleep(0)
            yield {"choices": [{"delta": {"content": word}}]}

    async def send_message(prompt: str):
        return chunks(prompt)

    rate = lg.RateLimit(rpm=100, tpm=10_000, tokens=lambda prompt: 50)
    limit = lg.ConcurrencyLimit(1)
    layer = rate if outer == "rate_limit" else lg.Metrics(name="dropped")
    guarded = lg.guard(layer, limit)(send_message)
    gc.disable()
    try:
        stream = await guarded("one two three")
        assert limit.limiter.in_flight == 1
        del stream
        for _ in range(5):
            await asyncio.sleep(0)
        assert limit.limiter.in_flight == 0
        assert (rate.statistics().in_flight, rate.statistics().reserved_tokens) == (0, 0)
    finally:
        gc.enable()
