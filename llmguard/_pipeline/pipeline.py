"""The two user-facing forms over one composition: ``guard(...)`` and the ``Pipeline`` builder."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .._core.check import text
from .._core.call import WANT_CALL, Call, Layer, call_sink, compose
from .._core.stream import Stream
from .._core.public import public

__all__ = ["Guarded", "Pipeline", "guard", "wrap_client"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@public
class Guarded(Protocol[P, R_co]):
    """A guarded async callable: same signature as the original, plus ``pipeline`` and ``stats``."""

    pipeline: Pipeline
    __wrapped__: Callable[P, Awaitable[R_co]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def stats(self) -> dict[str, Any]: ...


def _is_async_callable(obj: Any) -> bool:
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


def _describe(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _check_layer(layer: Any) -> Layer:
    if inspect.isclass(layer):
        raise TypeError(
            f"{layer.__qualname__} is a layer class, not a layer: pass an instance, "
            f"e.g. {layer.__qualname__}(...)"
        )
    if isinstance(layer, Pipeline):
        raise TypeError(
            "a Pipeline is not a layer: add its layers instead, e.g. "
            "Pipeline(*base.layers, ...) or base.then(...)"
        )
    if not _is_async_callable(layer):
        raise TypeError(
            f"{_describe(layer)!s} is not a layer: a layer is an object with "
            "`async def __call__(self, call, call_next)` (or an `async def f(call, call_next)`)"
        )
    return layer


def _label(layer: Any) -> str:
    name = getattr(layer, "__name__", None) or type(layer).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@public
class Pipeline:
    """An immutable, ordered stack of layers; the first layer is the outermost.

    Every builder method returns a new pipeline, so a base can be shared and extended::

        base = Pipeline(name="chat").retry(attempts=4).rate_limit(rpm=500)
        guarded = base.timeout(30).wrap(send_message)     # or use ``@base`` as a decorator

    Layer instances keep their state, so one pipeline (or one layer) can guard many functions
    that share a quota, a cache or a circuit.
    """

    __slots__ = ("_layers", "_name")

    def __init__(self, *layers: Layer, name: str | None = None) -> None:
        checked = tuple(_check_layer(layer) for layer in layers)
        seen: set[int] = set()
        for layer in checked:
            if id(layer) in seen:
                raise ValueError(
                    f"layer {layer!r} appears twice in one pipeline, so every call would pass it "
                    "twice (double-counting its quota or deadlocking its limit); create a second "
                    "instance if you really want two"
                )
            seen.add(id(layer))
        if name is not None:
            text("name", name, hint="; or None")
        self._layers = checked
        self._name = name

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers, outermost first."""
        return self._layers

    @property
    def name(self) -> str | None:
        """The pipeline's name, used in metrics and error messages."""
        return self._name

    def then(self, *layers: Layer) -> Pipeline:
        """Return a new pipeline with ``layers`` added inside the existing ones."""
        return Pipeline(*self._layers, *layers, name=self._name)

    # One method per layer kind. The import is deferred so each layer module loads only when used.

    def metrics(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Metrics` layer (the pipeline's name is its default name)."""
        from .._observability.metrics import Metrics

        options.setdefault("name", self._name)
        return self.then(Metrics(**options))

    def cache(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Cache` layer."""
        from .._cache.layer import Cache

        return self.then(Cache(**options))

    def fallback(self, *alternates: Any, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Fallback` layer trying ``alternates`` in order."""
        from .._resilience.fallback import Fallback

        return self.then(Fallback(*alternates, **options))

    def retry(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Retry` layer."""
        from .._resilience.retry import Retry

        return self.then(Retry(**options))

    def circuit_breaker(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.CircuitBreaker` layer."""
        from .._resilience.circuit import CircuitBreaker

        return self.then(CircuitBreaker(**options))

    def timeout(self, seconds: float | None = None, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Timeout` layer."""
        from .._resilience.timeout import Timeout

        return self.then(Timeout(seconds, **options))

    def rate_limit(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.RateLimit` layer."""
        from .._admission.ratelimit import RateLimit

        return self.then(RateLimit(**options))

    def concurrency_limit(self, limit: int, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.ConcurrencyLimit` layer."""
        from .._admission.concurrency import ConcurrencyLimit

        return self.then(ConcurrencyLimit(limit, **options))

    def adaptive_concurrency(self, **options: Any) -> Pipeline:
        """Add an :class:`llmguard.AdaptiveConcurrency` layer."""
        from .._admission.adaptive import AdaptiveConcurrency

        return self.then(AdaptiveConcurrency(**options))

    def stats(self) -> dict[str, Any]:
        """A snapshot of every layer's ``statistics()``, keyed by layer kind (``retry``, ...)."""
        snapshot: dict[str, Any] = {}
        for layer in self._layers:
            statistics = getattr(layer, "statistics", None)
            if statistics is None:
                continue
            label = base = _label(layer)
            n = 2
            while label in snapshot:
                label, n = f"{base}_{n}", n + 1
            snapshot[label] = statistics()
        return snapshot

    @overload
    def wrap(self, fn: Callable[P, Awaitable[R]]) -> Guarded[P, R]: ...
    @overload
    def wrap(self, fn: Any) -> Guarded[..., Any]: ...

    def wrap(self, fn: Any) -> Guarded[..., Any]:
        """Guard ``fn`` (an async function, method, bound method, partial or async callable)."""
        if not _is_async_callable(fn):
            raise TypeError(
                f"llmguard guards async callables, and {_describe(fn)!s} is not one. Make it "
                "`async def`, or wrap a blocking client: `async def call(*a, **kw): "
                "return await asyncio.to_thread(client.call, *a, **kw)`"
            )
        inner = getattr(fn, "pipeline", None)
        if isinstance(inner, Pipeline):
            shared = [layer for layer in self._layers if any(layer is i for i in inner._layers)]
            if shared:
                raise ValueError(
                    f"{_describe(fn)!s} is already guarded by a pipeline with {shared[0]!r}; "
                    "wrapping it again would pass every call through that layer twice. Extend "
                    "the pipeline instead (pipeline.then(...)) or wrap the original "
                    "function (its __wrapped__)"
                )
        return _make_guarded(self, fn)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Guarded[P, R]:
        """Use the pipeline as a decorator: ``@pipeline``."""
        return self.wrap(fn)

    def __repr__(self) -> str:
        layers = ", ".join(repr(layer) for layer in self._layers)
        return f"Pipeline({layers}{', ' if layers else ''}name={self._name!r})"


def _make_guarded(pipeline: Pipeline, fn: Any) -> Any:
    # Layers that observe their neighbours (Metrics reads every layer's statistics() at
    # collection time) define ``bind(pipeline)``; it is called once per wrap, never per call.
    for layer in pipeline.layers:
        bind = getattr(layer, "bind", None)
        if bind is not None and callable(bind):
            bind(pipeline)
    handler = compose(pipeline.layers)
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


def guard(*layers: Layer, name: str | None = None) -> Pipeline:
    """Decorate an async callable with ``layers`` (outermost first)::

        @llmguard.guard(llmguard.Retry(attempts=4), llmguard.RateLimit(rpm=500))
        async def send_message(prompt: str) -> str: ...

    Equivalent to ``Pipeline(*layers, name=name)``, which is what it returns.
    """
    return Pipeline(*layers, name=name)


def wrap_client(obj: Any, method: str, pipeline: Pipeline | Iterable[Layer]) -> Any:
    """Guard ``obj.<method>`` in place, without subclassing; returns ``obj``.

    ``method`` may be dotted to reach a nested resource, e.g.
    ``wrap_client(client, "chat.completions.create", pipeline)`` for an ``AsyncOpenAI`` client.
    An object that refuses attribute assignment (an extension type such as a PyO3 agent, or a
    class with ``__slots__``) is not changed: a :class:`~llmguard._pipeline.proxy.GuardedProxy` that
    forwards everything else to it is returned instead, so always use the return value.
    """
    from .proxy import GuardedProxy, awaiting

    text("method", method, hint="; the name of obj's async method, e.g. 'send_message'")
    if not isinstance(pipeline, Pipeline):
        if not isinstance(pipeline, Iterable):
            raise TypeError(f"pipeline must be a Pipeline or a list of layers, got {pipeline!r}")
        pipeline = Pipeline(*pipeline)
    *path, attr = method.split(".")
    owner = obj
    for part in path:
        owner = getattr(owner, part, None)
    original = None if owner is None else getattr(owner, attr, None)
    if original is None:
        raise AttributeError(
            f"{type(obj).__qualname__} has no method {method!r} to guard; check the method "
            "argument (a dotted path such as 'chat.completions.create' reaches nested ones)"
        )
    guarded = pipeline.wrap(awaiting(original))
    try:
        setattr(owner, attr, guarded)
    except (AttributeError, TypeError) as exc:
        if not path:
            proxy = GuardedProxy(obj)
            setattr(proxy, attr, guarded)
            return proxy
        raise TypeError(
            f"cannot replace {type(owner).__qualname__}.{attr} on this object ({exc}); "
            f"guard the bound method instead: guarded = pipeline.wrap(obj.{method})"
        ) from exc
    return obj
