"""Guarding an existing client or agent object: ``wrap_client`` and ``GuardedProxy``.

``wrap_client`` guards a method in place by assigning the guarded function on the object. Agents
built as extension types (PyO3, Cython) or with ``__slots__`` refuse that assignment; for them it
returns a :class:`GuardedProxy`. The proxy is a ``wrapt.AutoObjectProxy``: wrapt forwards every
special method the agent has (``len``, iteration, ``in``, ``[]``, calling, ``async with``, ``hash``,
comparisons, ``isinstance``), which a hand-written ``__getattr__`` proxy cannot (special methods
are looked up on the type). Only copying and pickling are ours to define (wrapt refuses them).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from typing import Any

import wrapt

from .._core.check import text
from .._core.layer import Layer
from .pipeline import Pipeline

__all__ = ["GuardedProxy", "awaiting", "wrap_client"]


class GuardedProxy(wrapt.AutoObjectProxy):  # type: ignore[misc]
    """Stands in for an agent with some of its methods guarded; ``__wrapped__`` is the agent.

    Every attribute and special method comes from the agent except the guarded methods.
    ``copy.copy``/``copy.deepcopy`` give a proxy over a copy of the agent, its methods guarded by
    the same pipelines; pickling pickles the agent alone (a pipeline's quotas and locks belong to
    this process: guard the unpickled agent again).
    """

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        # (pipeline, guarded function) per guarded method name; `_self_` names stay on the proxy.
        self._self_guarded: dict[str, tuple[Pipeline, Any]] = {}

    def guard_method(self, name: str, pipeline: Pipeline, method: Any) -> None:
        """Guard the agent's ``name`` method (bound method ``method``) with ``pipeline``."""
        self._self_guarded[name] = (pipeline, pipeline.wrap(awaiting(method)))

    def __getattr__(self, name: str) -> Any:
        guarded = self._self_guarded.get(name) if not name.startswith("_self_") else None
        if guarded is not None:
            return guarded[1]
        return getattr(self.__wrapped__, name)

    def __getattribute__(self, name: str) -> Any:
        # wrapt resolves most names on the wrapped object itself, before __getattr__: look at
        # the guarded methods first.
        if not name.startswith(("_self_", "__")):
            guarded = object.__getattribute__(self, "_self_guarded").get(name)
            if guarded is not None:
                return guarded[1]
        return super().__getattribute__(name)

    def _self_rebuilt(self, target: Any) -> GuardedProxy:
        proxy = GuardedProxy(target)
        for name, (pipeline, _) in self._self_guarded.items():
            proxy.guard_method(name, pipeline, getattr(target, name))
        return proxy

    def __copy__(self) -> GuardedProxy:
        return self._self_rebuilt(copy.copy(self.__wrapped__))

    def __deepcopy__(self, memo: dict[int, Any]) -> GuardedProxy:
        return self._self_rebuilt(copy.deepcopy(self.__wrapped__, memo))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)

    def __repr__(self) -> str:
        return f"<GuardedProxy {sorted(self._self_guarded)} of {self.__wrapped__!r}>"


def awaiting(method: Any) -> Any:
    """Adapt a native method that returns an awaitable (a PyO3 ``async fn``, a Cython coroutine)
    into an ``async def`` llmguard can guard; Python functions are returned unchanged.

    Such methods are builtins, so ``inspect`` cannot tell they are async until they are called.
    """
    if inspect.isfunction(getattr(method, "__func__", method)) or hasattr(method, "__code__"):
        return method
    if not (inspect.isbuiltin(method) or inspect.ismethoddescriptor(method)
            or type(method).__name__ in ("builtin_function_or_method", "method-wrapper")):
        return method

    async def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if not inspect.isawaitable(result):
            raise TypeError(
                f"{getattr(method, '__qualname__', method)!s} returned {type(result).__qualname__}, "
                "not an awaitable: llmguard guards async methods; guard the agent's async variant"
            )
        return await result

    for attr in ("__name__", "__qualname__", "__doc__"):
        try:
            setattr(call, attr, getattr(method, attr))
        except (AttributeError, TypeError):
            pass
    return call


def wrap_client(obj: Any, method: str, pipeline: Pipeline | Iterable[Layer]) -> Any:
    """Guard ``obj.<method>`` in place, without subclassing; returns ``obj``.

    ``method`` may be dotted to reach a nested resource, e.g.
    ``wrap_client(client, "chat.completions.create", pipeline)`` for an ``AsyncOpenAI`` client.
    An object that refuses attribute assignment (an extension type such as a PyO3 agent, or a
    class with ``__slots__``) is not changed: a :class:`GuardedProxy` that
    forwards everything else to it is returned instead, so always use the return value.
    """
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
    if isinstance(obj, GuardedProxy) and not path:
        obj.guard_method(attr, pipeline, original)
        return obj
    guarded = pipeline.wrap(awaiting(original))
    try:
        setattr(owner, attr, guarded)
    except (AttributeError, TypeError) as exc:
        if not path:
            proxy = obj if isinstance(obj, GuardedProxy) else GuardedProxy(obj)
            proxy.guard_method(attr, pipeline, original)
            return proxy
        raise TypeError(
            f"cannot replace {type(owner).__qualname__}.{attr} on this object ({exc}); "
            f"guard the bound method instead: guarded = pipeline.wrap(obj.{method})"
        ) from exc
    return obj
