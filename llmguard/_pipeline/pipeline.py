"""The ``Pipeline`` builder: an immutable stack of layers, and ``build()``, the one place they are
composed into a handler and wired to each other."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .._core.check import text
from .._core.layer import BuildHook, Handler, Layer, compose, invoke, is_async_callable, label
from .._core.public import public

if TYPE_CHECKING:
    from .guarded import Guarded

__all__ = ["Pipeline", "guard"]

P = ParamSpec("P")
R = TypeVar("R")


def _describe(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _check_layer(layer: Any) -> Layer:
    if not inspect.isclass(layer) and type(layer).__module__.startswith("aiolimiter"):
        from .._admission.aiolimiter_layer import Aiolimiter, is_aiolimiter

        if is_aiolimiter(layer):  # the user's AsyncLimiter: one unit per call
            return Aiolimiter(layer)
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
    if not is_async_callable(layer):
        raise TypeError(
            f"{_describe(layer)!s} is not a layer: a layer is an object with "
            "`async def __call__(self, call, call_next)` (or an `async def f(call, call_next)`)"
        )
    return layer


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

    def budget(self, usd: float, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Budget` layer capping spend at ``usd``."""
        from .._admission.budget.layer import Budget

        return self.then(Budget(usd, **options))

    def rate_limit(self, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.RateLimit` layer."""
        from .._admission.ratelimit.layer import RateLimit

        return self.then(RateLimit(**options))

    def route(self, *deployments: Any, **options: Any) -> Pipeline:
        """Add a :class:`llmguard.Router` over ``deployments`` (:class:`llmguard.Deployment`)."""
        from .._routing import Router

        return self.then(Router(*deployments, **options))

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
            key = base = label(layer)
            n = 2
            while key in snapshot:
                key, n = f"{base}_{n}", n + 1
            snapshot[key] = statistics()
        return snapshot

    @overload
    def wrap(self, fn: Callable[P, Awaitable[R]], *, terminal: Handler = ...) -> Guarded[P, R]: ...
    @overload
    def wrap(self, fn: Any, *, terminal: Handler = ...) -> Guarded[..., Any]: ...

    def wrap(self, fn: Any, *, terminal: Handler = invoke) -> Guarded[..., Any]:
        """Guard ``fn`` (an async function, method, bound method, partial or async callable).

        ``terminal`` is the innermost handler (default: call ``fn`` with the call's arguments);
        an application sending to an upstream passes its own."""
        if not is_async_callable(fn):
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
        from .guarded import make_guarded

        return make_guarded(self, fn, terminal)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Guarded[P, R]:
        """Use the pipeline as a decorator: ``@pipeline``."""
        return self.wrap(fn)

    def build(self, terminal: Handler = invoke) -> Handler:
        """Compose the layers around ``terminal`` into one handler (``await handler(call)``).

        The only place a pipeline becomes a handler: ``wrap``, ``guard``, the CLI and the
        integrations all come here. A :class:`~llmguard.BuildHook` layer (Metrics, which reads
        every layer's ``statistics()`` at collection time and traces each attempt at the
        provider) is bound to the pipeline and wraps the terminal, once per build, never per
        call.
        """
        hooks = [layer for layer in self._layers if isinstance(layer, BuildHook)]
        for layer in hooks:
            layer.bind(self)
        for layer in reversed(hooks):
            terminal = layer.around_terminal(terminal)
        return compose(self._layers, terminal)

    def __repr__(self) -> str:
        layers = ", ".join(repr(layer) for layer in self._layers)
        return f"Pipeline({layers}{', ' if layers else ''}name={self._name!r})"


def guard(*layers: Layer, name: str | None = None) -> Pipeline:
    """Decorate an async callable with ``layers`` (outermost first)::

        @llmguard.guard(llmguard.Retry(attempts=4), llmguard.RateLimit(rpm=500))
        async def send_message(prompt: str) -> str: ...

    Equivalent to ``Pipeline(*layers, name=name)``, which is what it returns.
    """
    return Pipeline(*layers, name=name)
