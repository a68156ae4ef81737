"""Streams through a pipeline: a streamed answer is a result whose end comes later.

The innermost handler turns a streamed answer (an async generator, or an async iterator returned
by ``litellm.acompletion(stream=True)`` or the openai SDK) into a :class:`Stream` and reads the
first chunk before returning. So everything that fails before the first chunk fails *inside*
``call_next`` where Retry and Fallback can act, and once a layer sees a ``Stream`` the answer has
started: an error after that propagates to the consumer unchanged.

Layers that hold something for the duration of the call (a concurrency permit, a token
reservation, a timer) do not release it when ``call_next`` returns a stream: they ``defer`` the
release to the stream's end, which comes exactly once, when the consumer exhausts it, closes it,
fails on it, is cancelled, or drops it (garbage collection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["Stream", "is_stream_result"]

#: Called once when the stream ends: with None when it was exhausted, else with the exception
#: that ended it (``GeneratorExit`` when the consumer closed or abandoned it).
EndCallback = Callable[[BaseException | None], Any]


def is_stream_result(result: Any) -> bool:
    """True for async iterators that are streamed answers (not strings, dicts or responses)."""
    return hasattr(type(result), "__anext__")


class Stream:
    """An async iterator over a streamed answer whose end runs the layers' deferred callbacks.

    Iterate it with ``async for``; close it early with ``await stream.aclose()`` (or
    ``async with stream:``). ``chunks`` counts chunks delivered so far.
    """

    __slots__ = ("_iterator", "_pending", "_callbacks", "_on_chunk", "_done", "chunks", "__weakref__")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self._iterator = iterator
        self._pending: list[Any] = []  # prefetched chunks not yet delivered
        self._callbacks: list[EndCallback] = []
        self._on_chunk: list[Callable[[Any], Any]] = []
        self._done = False
        #: Chunks delivered to the consumer so far.
        self.chunks = 0

    @classmethod
    async def start(cls, iterator: AsyncIterator[Any]) -> Stream:
        """Wrap ``iterator`` and read its first chunk, so early failures raise here."""
        stream = cls(iterator)
        try:
            stream._pending.append(await iterator.__anext__())
        except StopAsyncIteration:
            stream._finish(None)
        except BaseException as exc:
            await stream._close_iterator()
            stream._finish(exc)
            raise
        return stream

    @property
    def done(self) -> bool:
        """True once the stream has ended and its callbacks have run."""
        return self._done

    def defer(self, callback: EndCallback) -> None:
        """Run ``callback(error_or_None)`` once when the stream ends (at once if it has)."""
        if self._done:
            callback(None)
        else:
            self._callbacks.append(callback)

    def on_chunk(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(chunk)`` for every chunk as it is delivered to the consumer."""
        self._on_chunk.append(callback)

    def _finish(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:  # registration order: innermost layer first
            callback(error)

    async def _close_iterator(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if self._pending:
            chunk = self._pending.pop()
        elif self._done:
            raise StopAsyncIteration
        else:
            try:
                chunk = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._finish(None)
                raise
            except BaseException as exc:
                self._finish(exc)
                raise
        self.chunks += 1
        for callback in self._on_chunk:
            callback(chunk)
        return chunk

    async def aclose(self) -> None:
        """Stop the stream early: close the source and run the end callbacks."""
        if self._done and not self._pending:
            return
        self._pending.clear()
        try:
            await self._close_iterator()
        finally:
            self._finish(GeneratorExit())

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Abandoned without being exhausted or closed: give back what the layers hold. The
        # source generator itself is finalised by the event loop's asyncgen hooks.
        if not self._done:
            self._finish(GeneratorExit())

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return f"<Stream {state} chunks={self.chunks} deferred={len(self._callbacks)}>"
