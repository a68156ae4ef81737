"""Fallback chains: primary, then alternates in order, then an optional graceful default."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.attempt import Attempt
from .._core.call import Call
from .._core.classify import FailureKind, classify
from .._core.errors import FallbackExhausted
from .._core.events import EventKind
from .._core.layer import Handler, HandlesCalls, invoke, is_async_callable
from .._core.public import public
from .._core.redact import redact
from .._core.stats import LayerStats

__all__ = ["Fallback", "FallbackStats"]

_UNSET: Any = object()


@public
@dataclass(frozen=True, slots=True)
class FallbackStats(LayerStats):
    calls: int
    #: Answers served by each alternate, by its label (``"model=gpt-4o"``, a function name).
    fallbacks: dict[str, int]
    #: Calls answered by the ``default``.
    defaulted: int
    #: Calls where everything failed.
    exhausted: int


def _label(alternate: Any) -> str:
    if isinstance(alternate, Mapping):
        return ",".join(f"{k}={v}" for k, v in redact(dict(alternate)).items())
    return getattr(alternate, "__qualname__", None) or type(alternate).__qualname__


def _check(alternate: Any) -> Any:
    if isinstance(alternate, Mapping):
        if not alternate or not all(isinstance(k, str) for k in alternate):
            raise ValueError(
                f"a keyword-override alternate must be a non-empty dict of argument names, "
                f"got {redact(alternate)!r}; e.g. {{'model': 'gpt-4o-mini'}}"
            )
        return dict(alternate)
    if not is_async_callable(alternate):
        raise TypeError(
            f"alternate {redact(alternate)!r} is neither an async callable nor a dict of keyword "
            "overrides such as {'model': 'gpt-4o-mini'}"
        )
    return alternate


@public
class Fallback:
    """Layer: when the rest of the pipeline fails, try each alternate in order.

    An alternate is:

    * a dict of keyword overrides, e.g. ``{"model": "gpt-4o-mini"}``: the rest of the pipeline
      runs again with those arguments replaced (model fallbacks for litellm and the OpenAI SDK);
    * an async callable (another client) called with the same arguments; a guarded function
      (another pipeline) runs this very call through its layers (its ``handle``), so the call's
      partition and priority go with it.

    ``routes`` sends specific failure kinds to a specific alternate first, e.g.
    ``{FailureKind.CONTEXT_WINDOW: {"model": "long-context-model"}}``. ``on`` (a predicate
    ``exc -> bool``) restricts which errors fall back (default: every ``Exception``; never a
    cancellation). ``default`` is returned (or called with the arguments, if callable; an async
    function's answer is awaited) when all failed: graceful degradation. An answer from an
    alternate or the default is marked on the call's record (``record.fallback``), so a Cache
    above never stores it under the primary's key. Otherwise :class:`llmguard.FallbackExhausted` holds every error
    in order. A streamed answer falls back only before its first chunk.
    """

    __slots__ = ("alternates", "routes", "default", "_on", "_calls", "_used", "_defaulted",
                 "_exhausted")

    def __init__(
        self,
        *alternates: Any,
        routes: Mapping[FailureKind, Any] | None = None,
        on: Callable[[BaseException], bool] | None = None,
        default: Any = _UNSET,
    ) -> None:
        if not alternates and not routes and default is _UNSET:
            raise ValueError("Fallback needs at least one alternate, a route or a default")
        self.alternates = tuple(_check(a) for a in alternates)
        if routes is not None and not isinstance(routes, Mapping):
            raise TypeError(f"routes must be a dict {{FailureKind: alternate}}, got {routes!r}")
        routes = dict(routes or {})
        for kind in routes:
            if not isinstance(kind, FailureKind):
                raise TypeError(f"routes keys must be FailureKind members, got {kind!r}")
        self.routes = {kind: _check(alt) for kind, alt in routes.items()}
        if on is not None and not callable(on):
            raise TypeError(f"on must be a predicate exc -> bool, got {on!r}")
        self._on = on
        self.default = default
        self._calls = self._defaulted = self._exhausted = 0
        self._used: Counter[str] = Counter()

    def statistics(self) -> FallbackStats:
        return FallbackStats(self._calls, dict(self._used), self._defaulted, self._exhausted)

    async def _try(self, alternate: Any, call: Call, call_next: Handler, outer: Attempt,
                   fn: Any, kwargs: dict[str, Any]) -> Any:
        # Each alternate is a first attempt within the caller's deadline, with the caller's
        # function and arguments (plus its overrides), nothing of the primary's.
        call.fn, call.kwargs = fn, kwargs
        call.current = Attempt(1, outer.deadline, parent=outer,
                               overrides=alternate if isinstance(alternate, dict) else None)
        if isinstance(alternate, HandlesCalls):  # another pipeline: this call goes through it
            return await alternate.handle(call)
        if not isinstance(alternate, dict):  # another client: called directly (invoke starts
            call.fn = alternate              # a streaming alternate's stream)
            return await invoke(call)
        call.kwargs = {**call.kwargs, **alternate}  # for the layers below us only
        return await call_next(call)

    @staticmethod
    def _taken(call: Call, label: str, error: Exception) -> None:
        call.record.fallback = label
        call.emit(EventKind.FALLBACK_TAKEN, "fallback", error=error, detail=label)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        self._calls += 1
        outer, fn, kwargs = call.current, call.fn, call.kwargs
        try:
            try:  # the primary, in this frame: a call that succeeds costs no second coroutine
                return await call_next(call)
            except Exception as exc:
                if self._on is not None and not self._on(exc):
                    raise
                error = exc
            return await self._chain(call, call_next, (outer, fn, kwargs), error)
        finally:
            call.current, call.fn, call.kwargs = outer, fn, kwargs

    async def _chain(self, call: Call, call_next: Handler,
                     caller: tuple[Attempt, Any, dict[str, Any]], error: Exception) -> Any:
        """The primary failed with ``error``: try the alternates, then the default."""
        errors: list[Exception] = [error]
        route = self.routes.get(classify(errors[0]).kind)
        chain = ((route,) if route is not None else ()) + self.alternates
        for alternate in chain:
            try:
                result = await self._try(alternate, call, call_next, *caller)
            except Exception as exc:
                if self._on is not None and not self._on(exc):
                    raise
                errors.append(exc)
                continue
            label = _label(alternate)
            self._used[label] += 1
            self._taken(call, label, errors[0])
            return result
        if self.default is not _UNSET:
            call.current, call.fn, call.kwargs = caller
            self._defaulted += 1
            self._taken(call, "default", errors[-1])
            if not callable(self.default):
                return self.default
            answer = self.default(*call.args, **call.kwargs)
            return await answer if inspect.isawaitable(answer) else answer
        self._exhausted += 1
        names = ["primary", *(_label(a) for a in chain)]
        summary = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in zip(names, errors))
        raise FallbackExhausted(
            f"the primary and {len(chain)} alternate(s) all failed ({summary}); add an "
            "alternate or a default=, or fix the cause of the first error",
            errors,
        )

    def __repr__(self) -> str:
        chain = ", ".join(_label(a) for a in self.alternates)
        return f"Fallback({chain}, calls={self._calls}, used={dict(self._used)})"
