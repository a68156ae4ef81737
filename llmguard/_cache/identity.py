"""Who a guarded function is, for its cache keys: a name valid in every process and, where one
process holds several callables under that name, a serial telling them apart that names this
process too (so it never matches another process's key in a shared store)."""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import weakref
from typing import Any

from .canonical import stable_digest

__all__ = ["function_identity", "serial"]


def _process_name() -> str:
    """A name of this process no other process has: random, not the pid (every container's
    first process is pid 1, and pids are reused)."""
    return os.urandom(6).hex()


class _Serials:
    """Process-local names for objects that have no name valid in other processes (closures,
    instances, partials of unserialisable arguments). A serial is never reused, unlike ``id()``,
    so a new closure never reads a dead one's entries.

    A serial carries this process's random name: a counter alone starts at 1 in every process,
    so two workers sharing a Redis store gave their different closures (``partial(ask,
    Agent("lawyer"))`` here, ``partial(ask, Agent("pirate"))`` there) one key and read each
    other's answers. With the name, such keys never meet in a store shared across processes:
    their entries stay this process's own (``namespace=`` is how to share them on purpose).
    A forked child draws a new name, so siblings forked from one parent never collide either
    (objects named before the fork keep their name: they are the parent's, copied)."""

    def __init__(self) -> None:
        self._weak: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[Any, str]] = {}  # objects that refuse weak references
        self._next = itertools.count(1)
        self.process = _process_name()

    def _new(self) -> str:
        return f"{self.process}.{next(self._next)}"

    def __call__(self, obj: Any) -> str:
        try:
            serial = self._weak.get(obj)
            if serial is None:
                serial = self._weak[obj] = self._new()
            return serial
        except TypeError:  # not weakly referenceable (or unhashable): keep it alive instead
            held = self._strong.get(id(obj))
            if held is None or held[0] is not obj:
                held = self._strong[id(obj)] = (obj, self._new())
            return held[1]

    def forked(self) -> None:
        self.process = _process_name()


serial = _serial = _Serials()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=serial.forked)


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
