"""A proxy that guards methods of objects which refuse attribute assignment.

``wrap_client`` guards a method in place by assigning the guarded function on the object. Agents
built as extension types (PyO3, Cython) or with ``__slots__`` refuse that assignment; for them
``wrap_client`` returns a ``GuardedProxy``: every attribute comes from the agent, except the
guarded methods. ``isinstance(proxy, type(agent))`` still holds (the proxy reports the agent's
class, as ``wrapt.ObjectProxy`` and ``unittest.mock`` do).
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["GuardedProxy", "awaiting"]


class GuardedProxy:
    """Stands in for ``target`` with some of its methods guarded. ``__wrapped__`` is the target."""

    __slots__ = ("__wrapped__", "_llmguard_methods")

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "__wrapped__", target)
        object.__setattr__(self, "_llmguard_methods", {})

    def __getattr__(self, name: str) -> Any:  # only called for names the proxy does not have
        methods = object.__getattribute__(self, "_llmguard_methods")
        if name in methods:
            return methods[name]
        return getattr(object.__getattribute__(self, "__wrapped__"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        # wrap_client guards a second method by assignment: keep it here, never on the target.
        if callable(value) and hasattr(value, "pipeline"):
            self._llmguard_methods[name] = value
        else:
            setattr(self.__wrapped__, name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, AgentClass) stays true
        return type(self.__wrapped__)

    def __repr__(self) -> str:
        return f"<GuardedProxy {sorted(self._llmguard_methods)} of {self.__wrapped__!r}>"


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
