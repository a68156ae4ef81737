"""Who a guarded function is, for its cache keys: a name valid in every process and, where one
process holds several callables under that name, a process-local serial telling them apart."""

from __future__ import annotations

import functools
import inspect
import itertools
import weakref
from typing import Any

from .canonical import stable_digest

__all__ = ["function_identity", "serial"]


class _Serials:
    """Process-local names for objects that have no name valid in other processes (closures,
    instances, partials of unserialisable arguments). A serial is never reused, unlike ``id()``,
    so a new closure never reads a dead one's entries."""

    def __init__(self) -> None:
        self._weak: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[Any, int]] = {}  # objects that refuse weak references
        self._next = itertools.count(1)

    def __call__(self, obj: Any) -> int:
        try:
            serial = self._weak.get(obj)
            if serial is None:
                serial = self._weak[obj] = next(self._next)
            return serial
        except TypeError:  # not weakly referenceable (or unhashable): keep it alive instead
            held = self._strong.get(id(obj))
            if held is None or held[0] is not obj:
                held = self._strong[id(obj)] = (obj, next(self._next))
            return held[1]


serial = _serial = _Serials()


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or ''}.{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


def function_identity(fn: Any) -> tuple[str, str]:
    """``(name, instance)`` of a guarded callable: ``name`` is the same in every process
    (``module.qualname``); ``instance`` tells apart what shares that name in one process (two
    closures from one factory, bound methods of two agents, partials with different objects
    bound), and is ``""`` when nothing does (a module-level function: then keys are stable
    across processes, which is what lets a Redis store share entries)."""
    if isinstance(fn, functools.partial):
        name, instance = function_identity(fn.func)
        try:
            bound = stable_digest([fn.args, fn.keywords], "partial")
        except TypeError:
            bound = f"#{_serial(fn)}"
        return name, f"{instance}({bound})"
    if inspect.ismethod(fn):
        name, instance = function_identity(fn.__func__)
        return name, f"{instance}@{_serial(fn.__self__)}"
    name = _qualified(fn)
    if inspect.isfunction(fn) or inspect.isasyncgenfunction(fn):
        return name, f"#{_serial(fn)}" if "<locals>" in fn.__qualname__ else ""
    if inspect.isbuiltin(fn) or inspect.ismethoddescriptor(fn):
        owner = getattr(fn, "__self__", None)
        return name, "" if owner is None or inspect.ismodule(owner) else f"@{_serial(owner)}"
    return name, f"#{_serial(fn)}"  # a callable object: its state may change its answers
