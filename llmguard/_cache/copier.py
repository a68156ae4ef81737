"""The caller's own copy of a cached answer, built by code made once per answer shape.

A JSON-shaped answer (dicts with str keys, lists, tuples; str, numbers, None and bytes at the
leaves) is copied by a function compiled for its shape: dict and list displays with the
answer's keys as constants and its leaves taken from a tuple kept with the entry. Only the
containers are new; the leaves are immutable, so every copy shares them. A chat completion is
copied in under a third of the instructions ``marshal.loads`` of its snapshot takes (it makes
every str and number again: 4,100 against 13,600), and a twentieth of ``copy.deepcopy``'s.
Planning a copier walks the answer in Python (about two loads' worth), so the store plans on an
entry's second hit: an answer hit once costs what it did.
A dict whose values are all leaves is copied with ``dict.copy`` (a copy of its table, no
insertions), a list of leaves from a tuple (``[*t]``: embeddings, token ids).

The same shape (a chat completion of any content) reuses one copier; an answer too large or too
deep to be worth its own code (or with other types inside) is not planned (:func:`plan` returns
None) and is copied as before. Nothing here can be done by ``copy`` or ``marshal``: they walk
or decode the whole value on every copy, which is what this avoids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["LEAVES", "plan"]

#: Immutable types shared by every copy as they are.
LEAVES = frozenset({str, bytes, int, float, bool, type(None)})
#: Tokens at most in the shape of an answer given a copier (a chat completion: about 25).
_NODES = 256
#: Nesting at most (the compiler's limits are far above it).
_DEPTH = 32
#: Copiers kept, by their shape (cleared when full: shapes are few in practice).
_COPIERS = 256
_copiers: dict[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]] = {}


class _Unfit(Exception):
    """The value has a part no copier is made for (or is too large): copy it the general way."""


def plan(value: Any) -> tuple[Callable[[tuple[Any, ...]], Any], tuple[Any, ...]] | None:
    """``(copier, parts)`` with ``copier(parts)`` a new copy of ``value`` sharing its leaves and
    nothing else, or None when ``value`` is not a JSON-shaped dict, list or tuple (or is too
    large to be worth it). ``parts`` holds ``value``'s leaves and its leaf-only dicts, which the
    copier copies: ``value`` must stay private."""
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return None
    parts: list[Any] = []
    shape: list[Any] = []
    try:
        _walk(value, parts, shape, 0)
    except _Unfit:
        return None
    signature = tuple(shape)
    copier = _copiers.get(signature)
    if copier is None:
        copier = _compile(_expression(iter(signature), iter(range(len(parts)))), len(parts))
        if len(_copiers) >= _COPIERS:
            _copiers.clear()
        _copiers[signature] = copier
    return copier, tuple(parts)


# The shape of an answer: a flat tuple of these tokens and of its dicts' keys (str), in order.
_LEAF = 0  # a leaf or a tuple of leaves: shared as it is
_FLAT_DICT = 1  # a dict of leaves: dict.copy()
_FLAT_LIST = 2  # a list of leaves, kept as a tuple: [*t]
_DICT, _LIST, _TUPLE, _END = 3, 4, 5, 6  # displays of the tokens up to _END


def _walk(value: Any, parts: list[Any], shape: list[Any], depth: int) -> None:
    """Append the shape of ``value`` (a dict, list or tuple) to ``shape``, what its copier reads
    to ``parts``. A walk in Python, once per answer (its second hit), not per copy."""
    if depth > _DEPTH or len(shape) > _NODES:
        raise _Unfit
    if type(value) is dict:
        for item in value.values():
            if type(item) not in LEAVES:
                break
        else:
            shape.append(_FLAT_DICT)
            parts.append(value)  # private: copied, never handed out
            return
        shape.append(_DICT)
        for key, item in value.items():
            if type(key) is not str:
                raise _Unfit
            shape.append(key)
            _item(item, parts, shape, depth)
    else:
        for item in value:
            if type(item) not in LEAVES:
                break
        else:
            shape.append(_FLAT_LIST if type(value) is list else _LEAF)
            parts.append(tuple(value))
            return
        shape.append(_LIST if type(value) is list else _TUPLE)
        for item in value:
            _item(item, parts, shape, depth)
    shape.append(_END)
    if len(shape) > _NODES:
        raise _Unfit


def _item(item: Any, parts: list[Any], shape: list[Any], depth: int) -> None:
    """Append one item of a container at ``depth`` to ``shape`` and ``parts`` (see :func:`_walk`)."""
    kind = type(item)
    if kind in LEAVES:
        shape.append(_LEAF)
        parts.append(item)
    elif kind is dict or kind is list or kind is tuple:
        _walk(item, parts, shape, depth + 1)
    else:
        raise _Unfit


def _expression(tokens: Iterator[Any], places: Iterator[int]) -> str | None:
    """The source of a copier's display, from its shape's ``tokens`` (``places``: the parts'
    indexes, in order); None at the end of a list's or tuple's items."""
    token = next(tokens)
    if token == _LEAF:
        return f"_{next(places)}"
    if token == _FLAT_DICT:
        return f"_{next(places)}.copy()"
    if token == _FLAT_LIST:
        return f"[*_{next(places)}]"
    if token == _END:
        return None
    items = []
    if token == _DICT:
        for key in tokens:
            if type(key) is not str:  # _END
                break
            items.append(f"{key!r}: {_expression(tokens, places)}")
        return "{" + ", ".join(items) + "}"
    while (item := _expression(tokens, places)) is not None:
        items.append(item)
    return f"[{', '.join(items)}]" if token == _LIST else f"({', '.join(items)},)"


def _compile(expression: str, count: int) -> Callable[[tuple[Any, ...]], Any]:
    names = "".join(f"_{i}, " for i in range(count))
    unpack = f"    {names}= parts\n" if count else ""
    namespace: dict[str, Any] = {}
    exec(f"def copy(parts):\n{unpack}    return {expression}\n", namespace)  # noqa: S102
    return namespace["copy"]
