"""The caller's own copy of a cached answer, built by code made once per answer shape.

A JSON-shaped answer (dicts with str keys, lists, tuples; str, numbers, None and bytes at the
leaves) is copied by a function compiled for its shape: dict and list displays with the
answer's keys as constants and its leaves taken from a tuple kept with the entry. Only the
containers are new; the leaves are immutable, so every copy shares them. A chat completion is
copied in about a third of the instructions ``marshal.loads`` of its snapshot takes (it makes
every str and number again), and about a fifteenth of ``copy.deepcopy``'s (a Python walk).
A dict whose values are all leaves is copied with ``dict.copy`` (a copy of its table, no
insertions), a list of leaves from a tuple (``[*t]``: embeddings, token ids).

The same shape (a chat completion of any content) reuses one copier; an answer too large or too
deep to be worth its own code (or with other types inside) is not planned (:func:`plan` returns
None) and is copied as before. Nothing here can be done by ``copy`` or ``marshal``: they walk
or decode the whole value on every copy, which is what this avoids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LEAVES", "plan"]

#: Immutable types shared by every copy as they are.
LEAVES = frozenset({str, bytes, int, float, bool, type(None)})
#: Containers and leaves at most in an answer given its own copier (a chat completion: ~16).
_NODES = 256
#: Nesting at most (the compiler's limits are far above it).
_DEPTH = 32
#: Copiers kept, by the source of their shape (cleared when full: shapes are few in practice).
_COPIERS = 256
_copiers: dict[str, Callable[[tuple[Any, ...]], Any]] = {}


class _Unfit(Exception):
    """The value has a part no copier is made for (or is too large): copy it the general way."""


def plan(value: Any) -> tuple[Callable[[tuple[Any, ...]], Any], tuple[Any, ...]] | None:
    """``(copier, parts)`` with ``copier(parts)`` a new copy of ``value`` sharing its leaves and
    nothing else, or None when ``value`` is not JSON-shaped (or too large to be worth it).
    ``parts`` holds ``value``'s leaves and leaf-only containers: ``value`` must stay private."""
    parts: list[Any] = []
    try:
        source = _source(value, parts, [_NODES], 0)
    except _Unfit:
        return None
    copier = _copiers.get(source)
    if copier is None:
        copier = _compile(source, len(parts))
        if len(_copiers) >= _COPIERS:
            _copiers.clear()
        _copiers[source] = copier
    return copier, tuple(parts)


def _source(value: Any, parts: list[Any], left: list[int], depth: int) -> str:
    """The expression that rebuilds ``value`` from ``parts`` (appending what it reads there);
    ``left[0]``: how many more nodes the answer may have."""
    kind = type(value)
    left[0] -= 1
    if left[0] < 0 or depth > _DEPTH:
        raise _Unfit
    if kind in LEAVES:
        parts.append(value)
        return f"_{len(parts) - 1}"
    if kind is dict:
        if not value:
            return "{}"
        for key in value:
            if type(key) is not str:
                raise _Unfit
        if all(type(item) in LEAVES for item in value.values()):
            parts.append(value)  # private: copied, never handed out
            return f"_{len(parts) - 1}.copy()"
        items = [f"{key!r}: {_source(item, parts, left, depth + 1)}" for key, item in value.items()]
        return "{" + ", ".join(items) + "}"
    if kind is list or kind is tuple:
        if all(type(item) in LEAVES for item in value):
            parts.append(tuple(value))  # a tuple of leaves is itself immutable
            return f"[*_{len(parts) - 1}]" if kind is list else f"_{len(parts) - 1}"
        items = [_source(item, parts, left, depth + 1) for item in value]
        return f"[{', '.join(items)}]" if kind is list else f"({', '.join(items)},)"
    raise _Unfit


def _compile(expression: str, count: int) -> Callable[[tuple[Any, ...]], Any]:
    names = "".join(f"_{i}, " for i in range(count))
    unpack = f"    {names}= parts\n" if count else ""
    namespace: dict[str, Any] = {}
    exec(f"def copy(parts):\n{unpack}    return {expression}\n", namespace)  # noqa: S102
    return namespace["copy"]
