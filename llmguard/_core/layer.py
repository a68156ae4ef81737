"""The one abstraction: a layer around an async callable, and the seams a layer may declare.

A layer receives the per-call context and the next handler on every call (Polly v8, starlette),
so one layer instance and its state (a quota, a cache, a circuit) can guard many call sites.
Besides ``__call__`` a layer may implement :class:`BuildHook` (told about the pipeline it is
built into) and :class:`HeaderObserver` (shown each attempt's provider response headers).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from types import FunctionType, MethodType
from typing import Any, Protocol, runtime_checkable

from .call import Call
from .public import public
from .stream import Stream, is_stream_result

__all__ = ["NOT_NOW", "AnswersNow", "BuildHook", "Handler", "HandlesCalls", "HeaderObserver",
           "Layer", "Retrying", "SeesAnswersNow", "answer_now_path", "compose", "invoke",
           "invoke_timed", "is_async_callable", "label"]

#: The next step of a pipeline: takes the call, returns (an awaitable of) the result.
Handler = Callable[["Call"], Awaitable[Any]]


@public
@runtime_checkable
class Layer(Protocol):
    """Anything with ``async def __call__(self, call, call_next, /)``.

    A layer reads and annotates ``call``, awaits ``call_next(call)`` (zero or more times) and
    returns the result. It keeps its state on ``self`` so one instance can guard many functions,
    and may expose ``statistics()`` returning a frozen dataclass (shown by ``Guarded.stats()``).
    """

    async def __call__(self, call: Call, call_next: Handler, /) -> Any: ...


@public
@runtime_checkable
class BuildHook(Protocol):
    """A layer that observes the pipeline it is built into (Metrics reads its neighbours'
    ``statistics()`` and traces each attempt at the provider).

    ``Pipeline.build`` calls ``bind(pipeline)`` on every such layer, then, innermost first,
    ``around_terminal(handler)``, which returns the handler to use as the provider call (the
    same one to add nothing). Both run once per build, never per call; a layer built into
    several pipelines is bound to each.
    """

    def bind(self, pipeline: Any) -> None: ...

    def around_terminal(self, handler: Handler) -> Handler: ...


@public
@runtime_checkable
class HeaderObserver(Protocol):
    """A layer that learns from the provider's response headers (RateLimit: the quotas left).

    :func:`compose` gives such a layer a next handler that clears ``call.response_headers``
    before the attempt and, when the terminal or an integration below wrote them (success or
    error), calls ``observe_response(call)`` as the answer comes back through the layer. It runs
    synchronously and never raises; it reads ``call.response_headers`` and ``call.partition``.
    A layer whose class sets ``observes_inline = True`` does both in its own ``__call__``
    around ``call_next`` instead (RateLimit: one coroutine frame less per call).
    """

    def observe_response(self, call: Call) -> None: ...


@runtime_checkable
class Retrying(Protocol):
    """A layer that sends a failed call again, up to ``attempts`` times in all (``Retry``): a
    client library below it must not retry too, or attempts multiply (the integrations turn
    the SDK's own retries off when a pipeline has one)."""

    attempts: int


@runtime_checkable
class HandlesCalls(Protocol):
    """An alternate that runs the call itself (a guarded function's ``handle``): Fallback hands
    it the call, so its partition, priority and record go with it into the alternate's layers,
    instead of calling it with the arguments as a new call."""

    def handle(self, call: Call, /) -> Awaitable[Any]: ...


class _NotNow:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_NOW"


#: What :meth:`AnswersNow.answer_now` returns when it has no answer at once.
NOT_NOW: Any = _NotNow()


@runtime_checkable
class AnswersNow(Protocol):
    """A layer that can answer some calls at once, synchronously, before anything is awaited
    (Cache: a hit in an in-process store). The guarded function asks it first, when every layer
    above it is a :class:`SeesAnswersNow` and nobody would see the call's record (no
    ``recording()``, no event subscriber): a hit then costs no ``Call``, no record and no
    coroutine per layer. ``answer_now(fn, args, kwargs, now)`` (``now``: the loop time just
    read, or None) returns the answer, having counted it
    as its ``__call__`` would, or :data:`NOT_NOW` (then the call runs through the layers as
    usual, and ``__call__`` looks again). ``answers_now`` False (a shared store answers only
    asynchronously) keeps the guarded function from asking."""

    answers_now: bool

    def answer_now(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   now: float | None = None) -> Any: ...


@runtime_checkable
class SeesAnswersNow(Protocol):
    """A layer that, for a call an inner :class:`AnswersNow` layer answered at once, has nothing
    to do but account for it: ``answered_now(kwargs, result, seconds)`` does what its
    ``__call__`` would have done for that call (Metrics: count the hit, its latency).
    ``sees_answers_now`` False (Metrics with a tracer: a span per call) keeps the call on the
    usual path."""

    sees_answers_now: bool

    def answered_now(self, kwargs: dict[str, Any], result: Any, seconds: float) -> None: ...


#: ``now(fn, args, kwargs, loop, start)``: the answer of a call at once, or :data:`NOT_NOW`
#: (``start``: the guarded function's clock read as the call started, if they time it).
AnswerNow = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any, Any], Any]


def answer_now_path(layers: Sequence[Any]) -> tuple[AnswerNow, bool] | None:
    """The synchronous path of a pipeline whose outer layers can answer a call at once (see
    :class:`AnswersNow`) and whether layers above it time the call, or None. Built once."""
    seers = []
    for layer in layers:
        if isinstance(layer, AnswersNow) and layer.answers_now:
            answer = layer.answer_now
            break
        if not (isinstance(layer, SeesAnswersNow) and layer.sees_answers_now):
            return None
        seers.append(layer.answered_now)
    else:
        return None
    if not seers:
        return (lambda fn, args, kwargs, loop, start: answer(fn, args, kwargs)), False

    def now(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], loop: Any,
            start: float) -> Any:
        result = answer(fn, args, kwargs, start)
        if result is not NOT_NOW:
            seconds = loop.time() - start  # what the layers above would time: the answer
            for seen in seers:
                seen(kwargs, result, seconds)
        return result

    return now, True


async def invoke(call: Call) -> Any:
    """The innermost handler: call the guarded function with the call's arguments.

    A streamed answer (an async generator, or an async iterator the coroutine returns) comes back
    as a :class:`~llmguard._core.stream.Stream` whose first chunk has been read, so failures before
    the first chunk happen inside the pipeline where Retry and Fallback can act.
    """
    call.mark_sent()
    result = call.fn(*call.args, **call.kwargs)
    if not is_stream_result(result):
        result = await result
        if not is_stream_result(result):
            return result
    return result if isinstance(result, Stream) else await Stream.start(result)


async def invoke_timed(call: Call) -> Any:
    """:func:`invoke`, also writing the attempt's time at the provider (to the answer, or to the
    first chunk) to ``call.record.latency``: the terminal of runners that report it per line
    (``llmguard run``, Ray). Two clock reads the default terminal does without."""
    import asyncio  # here, not at the top: `import llmguard` does not load asyncio

    clock = asyncio.get_running_loop().time
    start = clock()
    try:
        return await invoke(call)
    finally:
        call.record.latency = clock() - start


def compose(layers: Sequence[Layer], terminal: Handler = invoke) -> Handler:
    """Fold ``layers`` around ``terminal``; the first layer listed is the outermost.

    Each step is a plain function returning the layer's coroutine, so composition adds no
    coroutine frame of its own: the only per-layer cost is the layer itself (and for a
    :class:`HeaderObserver`, one frame that shows it the attempt's response headers).
    """
    handler = terminal
    for layer in reversed(layers):
        if isinstance(layer, HeaderObserver) and not getattr(layer, "observes_inline", False):
            handler = _observed(layer, handler)
        handler = _bind(layer, handler)
        if getattr(layer, "takes_deferred", False):
            # a limiter that runs ``Attempt.deferred`` when it lets a call go at once: an
            # outer rate limit calling this handler may leave its reservation to it
            handler.takes_deferred = True  # type: ignore[attr-defined]
    return handler


def _observed(observer: HeaderObserver, call_next: Handler) -> Handler:
    async def handler(call: Call) -> Any:
        call.response_headers = None  # this attempt's, never an earlier one's
        try:
            return await call_next(call)
        finally:
            if call.response_headers is not None:
                observer.observe_response(call)

    return handler


def _bind(layer: Layer, call_next: Handler) -> Handler:
    method = inspect.getattr_static(type(layer), "__call__", None)  # bound once (a plain
    if type(method) is FunctionType:  # method): calling the object costs ~700 instructions more
        layer = MethodType(method, layer)
    def handler(call: Call) -> Awaitable[Any]:
        return layer(call, call_next)

    return handler


def is_async_callable(obj: Any) -> bool:
    """Coroutine functions, async generator functions (streams), methods and partials of them,
    and objects whose ``__call__`` is either."""
    if inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj):
        return True
    # Decorated with functools.wraps around an async def (the openai SDK's `create` methods):
    # the decorator returns the coroutine unchanged, so the wrapped function tells the truth.
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and not inspect.isclass(obj) and inspect.iscoroutinefunction(
        inspect.unwrap(wrapped)
    ):
        return True
    call = getattr(type(obj), "__call__", None)
    return not inspect.isclass(obj) and (
        inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
    )


def label(layer: Any) -> str:
    """A layer's kind in snake case (``RateLimit`` -> ``rate_limit``): stats keys, metric labels."""
    name = getattr(layer, "__name__", None) or type(layer).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
