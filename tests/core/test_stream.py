"""Streamed answers through a pipeline: first chunk inside the pipeline, deferred ends."""

import asyncio
import gc

import pytest

import llmguard as lg
from llmguard._core.stream import Stream


class Holder:
    """A layer that holds a resource until the call ends, deferring to the stream's end."""

    def __init__(self) -> None:
        self.held = 0
        self.ends: list[object] = []

    async def __call__(self, call, call_next):
        self.held += 1
        try:
            result = await call_next(call)
        except BaseException:
            self.held -= 1
            raise
        if isinstance(result, Stream):
            result.defer(self._release)
        else:
            self._release(None)
        return result

    def _release(self, error) -> None:
        self.held -= 1
        self.ends.append(type(error).__name__ if error else None)


class RetryOnce:
    """Retries a failed attempt once (enough to show where stream errors surface)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, call, call_next):
        for attempt in (1, 2):
            self.attempts += 1
            try:
                return await call_next(call)
            except ValueError:
                if attempt == 2:
                    raise


def chunks(n: int, fail_at: int | None = None, delay: float = 0.0):
    async def gen(prompt: str):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"broke at {i}")
            await asyncio.sleep(delay)
            yield f"{prompt}{i}"

    return gen


async def test_async_generator_streams_through_and_holds_until_exhausted() -> None:
    """A guarded async generator yields every chunk; the layer releases only at the end."""
    holder = Holder()
    guarded = lg.guard(holder)(chunks(3, delay=1.0))
    seen = []
    async for chunk in guarded("c"):
        seen.append(chunk)
        assert holder.held == 1
    assert seen == ["c0", "c1", "c2"]
    assert holder.held == 0 and holder.ends == [None]


async def test_consumer_breaking_early_releases() -> None:
    """Breaking out of the loop closes the stream and runs deferred releases."""
    holder = Holder()
    guarded = lg.guard(holder)(chunks(10))
    agen = guarded("c")
    async for _ in agen:
        break
    await agen.aclose()
    assert holder.held == 0 and holder.ends == ["GeneratorExit"]


async def test_consumer_cancelled_mid_stream_releases() -> None:
    """A consumer cancelled while waiting for a chunk gives back what layers hold."""
    holder = Holder()
    guarded = lg.guard(holder)(chunks(10, delay=5.0))

    async def consume():
        async for _ in guarded("c"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(7)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert holder.held == 0 and holder.ends == ["CancelledError"]


async def test_error_before_first_chunk_is_retryable_inside_the_pipeline() -> None:
    """A failure before the first chunk raises inside call_next, where a retry can act."""
    calls = {"n": 0}

    async def flaky(prompt: str):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("no connection")
        yield "ok"

    retry = RetryOnce()
    guarded = lg.guard(retry)(flaky)
    assert [c async for c in guarded("x")] == ["ok"]
    assert retry.attempts == 2


async def test_error_after_first_chunk_propagates_unchanged() -> None:
    """Once a chunk reached the consumer, an error mid-stream is not retried."""
    retry, holder = RetryOnce(), Holder()
    guarded = lg.guard(retry, holder)(chunks(5, fail_at=2))
    seen = []
    with pytest.raises(ValueError, match="broke at 2"):
        async for chunk in guarded("c"):
            seen.append(chunk)
    assert seen == ["c0", "c1"] and retry.attempts == 1
    assert holder.held == 0 and holder.ends == ["ValueError"]


async def test_coroutine_returning_an_async_iterator_is_a_stream() -> None:
    """litellm/openai style: `await create(stream=True)` returns an async iterator."""
    holder = Holder()

    async def create(**kwargs):
        return chunks(2)("s")

    guarded = lg.guard(holder)(create)
    stream = await guarded(stream=True)
    assert isinstance(stream, Stream) and holder.held == 1
    assert [c async for c in stream] == ["s0", "s1"]
    assert holder.held == 0 and stream.done


async def test_abandoned_stream_releases_on_collection() -> None:
    """A stream dropped without being closed still gives back what layers hold."""
    holder = Holder()

    async def create():
        return chunks(5)("s")

    stream = await lg.guard(holder)(create)()
    assert holder.held == 1
    del stream
    gc.collect()
    assert holder.held == 0


async def test_empty_stream_ends_at_once() -> None:
    """A stream with no chunks ends inside the pipeline; deferring then runs immediately."""
    holder = Holder()
    guarded = lg.guard(holder)(chunks(0))
    assert [c async for c in guarded("c")] == []
    assert holder.held == 0
