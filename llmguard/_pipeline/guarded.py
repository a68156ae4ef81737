"""The guarded function ``Pipeline.wrap`` returns, and its ``Guarded`` protocol."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from .._core.call import WANT_CALL, Call, call_sink
from .._core.public import public
from .._core.stream import Stream

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Guarded", "make_guarded"]

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


@public
class Guarded(Protocol[P, R_co]):
    """A guarded async callable: same signature as the original, plus ``pipeline`` and ``stats``."""

    pipeline: Pipeline
    __wrapped__: Callable[P, Awaitable[R_co]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def stats(self) -> dict[str, Any]: ...


def make_guarded(pipeline: Pipeline, fn: Any) -> Any:
    """The guarded function: same name, docstring and signature as ``fn``."""
    handler = pipeline.build()
    name = pipeline.name
    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(getattr(fn, "__call__", None)):

        async def guarded(*args: Any, **kwargs: Any) -> Any:  # an async generator, like fn
            result = await handler(Call(fn, args, kwargs, name))
            if not isinstance(result, Stream):  # e.g. a Fallback default: one chunk
                yield result
                return
            async with result:
                async for chunk in result:
                    yield chunk

    elif not pipeline.layers:

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

    else:

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            call = Call(fn, args, kwargs, name)
            if call_sink.get() is WANT_CALL:  # a batch runner reads call.attempt afterwards
                call_sink.set(call)
            return await handler(call)

    functools.update_wrapper(guarded, fn)
    if not hasattr(fn, "__name__"):  # partials and callable objects
        target = getattr(fn, "func", fn)
        named = target if hasattr(target, "__name__") else type(target)
        guarded.__name__, guarded.__qualname__ = named.__name__, named.__qualname__
    guarded.pipeline = pipeline  # type: ignore[attr-defined]
    guarded.stats = pipeline.stats  # type: ignore[attr-defined]
    return guarded
