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
from types import CoroutineType
from typing import Any

from .tokens import Usage, extract_usage, field
from .public import public

__all__ = ["Stream", "is_stream_result"]

#: Called once when the stream ends: with None when it was exhausted, else with the exception
#: that ended it (``GeneratorExit`` when the consumer closed or abandoned it).
EndCallback = Callable[[BaseException | None], Any]


def is_stream_result(result: Any) -> bool:
    """True for async iterators that are streamed answers (not strings, dicts or responses)."""
    # Exact types first: hasattr() on a type that lacks the name costs ~0.3 us (it builds the
    # AttributeError it then swallows), and the innermost handler asks twice per call.
    kind = type(result)
    return kind not in _NEVER and hasattr(kind, "__anext__")


#: Results that are never streams: a coroutine (what an async def returns) and plain data.
_NEVER = frozenset({CoroutineType, dict, str, list, tuple, bytes, int, float, bool, type(None)})


@public
class Stream:
    """An async iterator over a streamed answer whose end runs the layers' deferred callbacks.

    Iterate it with ``async for``; close it early with ``await stream.aclose()`` (or
    ``async with stream:``). ``chunks`` counts chunks delivered so far.
    """

    __slots__ = ("_iterator", "_pending", "_callbacks", "_on_chunk", "_done", "_idle",
                 "_deadline", "chunks", "usage_chunk", "__weakref__")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self._iterator = iterator
        self._pending: list[Any] = []  # prefetched chunks not yet delivered
        self._callbacks: list[EndCallback] = []
        self._on_chunk: list[Callable[[Any], Any]] = []
        self._done = False
        # Time limits set by a Timeout layer: (seconds, make_error) and (loop time, make_error).
        self._idle: tuple[float, Callable[[], BaseException]] | None = None
        self._deadline: tuple[float, Callable[[], BaseException]] | None = None
        #: Chunks delivered to the consumer so far.
        self.chunks = 0
        #: The last chunk that carried a ``usage`` field (OpenAI and litellm send usage in the
        #: final chunk), or None.
        self.usage_chunk: Any = None

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

    @property
    def usage(self) -> Usage | None:
        """Token usage reported by the stream (in its final chunk), once that chunk arrived."""
        return None if self.usage_chunk is None else extract_usage(self.usage_chunk)

    def limit(self, *, idle: float | None = None, deadline: float | None = None,
              idle_error: Callable[[], BaseException] | None = None,
              deadline_error: Callable[[], BaseException] | None = None) -> None:
        """Bound the wait for each next chunk to ``idle`` seconds and the whole stream to the
        loop time ``deadline``; on expiry the source is closed and ``*_error()`` is raised to
        the consumer. The tightest limit wins when several layers set one."""
        if idle is not None and idle_error is not None and (
                self._idle is None or idle < self._idle[0]):
            self._idle = (idle, idle_error)
        if deadline is not None and deadline_error is not None and (
                self._deadline is None or deadline < self._deadline[0]):
            self._deadline = (deadline, deadline_error)

    def _finish(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        raised = None
        for callback in callbacks:  # registration order: innermost layer first
            try:
                callback(error)
            except Exception as exc:  # (a user's, e.g. usage=: every other layer's end runs
                raised = raised or exc  # still, an outer permit's release; the first raised)
        if raised is not None:
            raise raised

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
                if self._idle is None and self._deadline is None:
                    chunk = await self._iterator.__anext__()
                else:
                    chunk = await self._next_in_time()
            except StopAsyncIteration:
                self._finish(None)
                raise
            except BaseException as exc:
                self._finish(exc)
                raise
        self.chunks += 1
        if field(chunk, "usage") is not None:
            self.usage_chunk = chunk
        for callback in self._on_chunk:
            callback(chunk)
        return chunk

    async def _next_in_time(self) -> Any:
        import asyncio  # here, not at the top: `import llmguard` does not load asyncio

        now = asyncio.get_running_loop().time()
        limits = []
        if self._idle is not None:
            limits.append((now + self._idle[0], self._idle[1]))
        if self._deadline is not None:
            limits.append(self._deadline)
        when, make_error = min(limits, key=lambda limit: limit[0])
        scope = asyncio.timeout_at(when)
        try:
            async with scope:
                return await self._iterator.__anext__()
        except TimeoutError as exc:
            if not scope.expired():  # the source's own TimeoutError
                raise
            await self._close_iterator()
            raise make_error() from exc

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

    def release(self) -> None:
        """Run the end callbacks now without closing the source (for code that cannot await:
        the source generator is then finalised by the event loop's asyncgen hooks)."""
        self._pending.clear()
        self._finish(GeneratorExit())

    def __del__(self) -> None:
        # Abandoned without being exhausted or closed: give back what the layers hold.
        if not self._done:
            self.release()

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return f"<Stream {state} chunks={self.chunks} deferred={len(self._callbacks)}>"
