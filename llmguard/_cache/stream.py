"""Caching streamed answers: record a stream while it is read, replay it as a stream.

A stream can be read once, so the callers of one single-flight share it through a :class:`Tee`:
each caller reads its own cursor over the chunks fetched so far, and whichever caller is ahead
fetches the next chunk from the source. The source is closed (and the layers below it release
what they hold) when it is exhausted, or when every caller that received the tee has stopped
reading. Only a stream read to its end is stored, as ``{STREAM_KEY: [chunk, ...]}``: plain data,
so the Redis store's default JSON serializer stores it as well as the in-memory store does.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .._core.errors import LLMGuardError
from .._core.stream import Stream

__all__ = ["STREAM_KEY", "Tee", "fresh", "is_recording", "replay"]

#: The one key of a stored stream's dict.
STREAM_KEY = "llmguard.stream"


def is_recording(value: Any) -> bool:
    """True for a stored stream (what :class:`Tee` stores when its source completes)."""
    return type(value) is dict and STREAM_KEY in value


#: Results of these types are immutable: shared as they are.
_IMMUTABLE = frozenset({str, bytes, int, float, bool, type(None)})


def fresh(value: Any) -> Any:
    """The caller's own copy of a cached value (``copy.deepcopy``; immutable ones as they are),
    so one caller editing its answer never changes what later hits get. A value deepcopy cannot
    copy is shared as it is."""
    if type(value) in _IMMUTABLE:
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


async def replay(recording: dict[str, list[Any]]) -> Stream:
    """A new Stream over (a copy of) a stored stream's chunks."""
    return await Stream.start(_iterate(fresh(recording[STREAM_KEY])))


async def _iterate(chunks: list[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


class Tee:
    """Share one source stream between the callers of a single flight.

    ``expected`` is the number of callers that will either :meth:`open` a reader or
    :meth:`forfeit`; ``on_complete(recording)`` is awaited once if the source is read to its end.
    """

    __slots__ = ("_source", "_chunks", "_expected", "_readers", "_ended", "_error", "_fetching",
                 "_on_complete")

    # The next chunk is fetched by a task of its own, which readers await through a shield: a
    # reader cancelled mid-fetch leaves it running for the others (fetched in the reader's own
    # task, the cancellation broke the source and every other reader lost its answer).

    def __init__(self, source: Stream, expected: int,
                 on_complete: Callable[[dict[str, list[Any]]], Awaitable[None]]) -> None:
        self._source = source
        self._chunks: list[Any] = []
        self._expected = expected
        self._readers = 0
        self._ended = False
        self._error: BaseException | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._on_complete = on_complete

    async def open(self) -> Stream:
        """A stream for one caller, starting at the first chunk."""
        self._expected -= 1
        self._readers += 1
        return await Stream.start(self._read())

    def forfeit(self) -> None:
        """A caller that received the tee but will not read it (it was cancelled)."""
        self._expected -= 1
        if self._unread():
            self._source.release()  # synchronous: this caller is unwinding a cancellation

    async def _read(self) -> AsyncIterator[Any]:
        position = 0
        try:
            while True:
                if position < len(self._chunks):
                    position += 1
                    yield self._chunks[position - 1]
                elif self._ended:
                    return
                elif self._error is not None:
                    raise self._error
                else:  # one task fetches; every reader waits for it, none can break it
                    fetching = self._fetching
                    if fetching is None or fetching.done():
                        fetching = self._fetching = asyncio.ensure_future(self._fetch())
                        fetching.add_done_callback(_retrieve)
                    await asyncio.shield(fetching)
        finally:
            self._readers -= 1
            if self._unread():  # nobody reads on: close the source so its permits return now
                fetching = self._fetching
                if fetching is not None and not fetching.done():
                    fetching.cancel()
                    await asyncio.wait([fetching])
                await self._source.aclose()

    async def _fetch(self) -> None:
        try:
            self._chunks.append(await self._source.__anext__())
        except StopAsyncIteration:
            self._ended = True
            await self._on_complete({STREAM_KEY: self._chunks})
        except Exception as exc:
            self._error = exc
            raise
        except BaseException:  # every reader left mid-fetch: the source is closed after this
            self._error = LLMGuardError(
                "the shared stream ended early: every caller reading it for this single flight "
                "stopped mid-chunk; call again")
            raise

    def _unread(self) -> bool:
        return self._readers == 0 and self._expected <= 0 and not self._source.done


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a fetch's error as seen (the readers that wanted it may all have left)."""
    if not task.cancelled():
        task.exception()
