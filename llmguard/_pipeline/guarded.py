"""The guarded function ``Pipeline.wrap`` returns, and its ``Guarded`` protocol."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from .._core import events
from .._core.call import Call
from .._core.classify import classify
from .._core.events import records
from .._core.layer import NOT_NOW, Handler, Layer, answer_now_path, invoke
from .._core.public import public
from .._core.stream import Stream

__all__ = ["Guarded", "PipelineView", "failed", "make_guarded"]

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class PipelineView(Protocol):
    """What a guarded function needs of its :class:`~llmguard.Pipeline` (typed against this,
    not the class, so this module does not import the one that imports it)."""

    @property
    def name(self) -> str | None: ...

    @property
    def layers(self) -> tuple[Layer, ...]: ...

    def build(self, terminal: Handler = ...) -> Handler: ...

    def stats(self) -> dict[str, Any]: ...


@public
class Guarded(Protocol[P, R_co]):
    """A guarded async callable: same signature as the original, plus ``pipeline`` and ``stats``."""

    pipeline: PipelineView
    __wrapped__: Callable[P, Awaitable[R_co]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def stats(self) -> dict[str, Any]: ...

    def handle(self, call: Call, /) -> Awaitable[Any]: ...


def failed(call: Call, stream: Stream) -> None:
    """A stream that fails after its first chunk ends the call with that error: the record
    says so (``record.error``), as it does for an error before the answer started."""

    def end(error: BaseException | None) -> None:
        if isinstance(error, Exception):
            call.record.error = classify(error).kind.value

    stream.defer(end)


def make_guarded(pipeline: PipelineView, fn: Any, terminal: Handler = invoke) -> Any:
    """The guarded function: same name, docstring and signature as ``fn``."""
    from asyncio import get_running_loop  # here: `import llmguard` does not load asyncio

    handler = pipeline.build(terminal)

    def handle(call: Call) -> Awaitable[Any]:
        """Run ``call`` (made elsewhere, e.g. by a Fallback) through this pipeline to ``fn``."""
        call.fn = fn
        call.started = None  # read by another pipeline's guarded function: not this one's start
        return handler(call)

    name, layers = pipeline.name, bool(pipeline.layers)
    # Outer layers that can answer a call synchronously (a Cache hit below Metrics): asked
    # first, so a hit skips the Call, its record and a coroutine per layer (AnswersNow).
    # ``timed``: layers above it time the call, from one clock read taken here (a miss hands
    # it to them as ``Call.started``).
    now, timed = answer_now_path(pipeline.layers) or (None, False)

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        call = Call(fn, args, kwargs, name, get_running_loop())
        sink = records.get()
        if sink is not None:  # inside llmguard.recording()
            sink.append(call.record)
        return call

    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(getattr(fn, "__call__", None)):

        async def guarded(*args: Any, **kwargs: Any) -> Any:  # an async generator, like fn
            call = start(args, kwargs)
            try:
                result = await handler(call)
            except Exception as exc:
                call.record.error = classify(exc).kind.value
                raise
            if not isinstance(result, Stream):  # e.g. a Fallback default: one chunk
                yield result
                return
            failed(call, result)
            async with result:
                async for chunk in result:
                    yield chunk

    else:

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            sink = records.get()
            if sink is None:  # nobody reads this call's record
                if not layers:  # nothing to do, nobody to tell
                    return await fn(*args, **kwargs)
                loop = get_running_loop()
                if now is not None and not events.subscribers:  # a cache hit, at once
                    start = loop.time() if timed else None
                    result = now(fn, args, kwargs, loop, start)
                    if result is not NOT_NOW:
                        return result
                    call = Call(fn, args, kwargs, name, loop, start)
                else:
                    call = Call(fn, args, kwargs, name, loop)
            else:  # inside llmguard.recording()
                call = Call(fn, args, kwargs, name, get_running_loop())
                sink.append(call.record)
            try:
                result = await handler(call)
            except Exception as exc:
                call.record.error = classify(exc).kind.value
                raise
            if isinstance(result, Stream):
                failed(call, result)
            return result

    functools.update_wrapper(guarded, fn)
    if not hasattr(fn, "__name__"):  # partials and callable objects
        target = getattr(fn, "func", fn)
        named = target if hasattr(target, "__name__") else type(target)
        guarded.__name__, guarded.__qualname__ = named.__name__, named.__qualname__
    guarded.pipeline = pipeline  # type: ignore[attr-defined]
    guarded.stats = pipeline.stats  # type: ignore[attr-defined]
    guarded.handle = handle  # type: ignore[attr-defined]
    return guarded
