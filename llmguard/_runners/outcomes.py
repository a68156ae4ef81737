"""What :func:`llmguard.batch` returns: every Outcome, kept as columns, built again on access.

A million kept ``Outcome`` objects cost about 240 bytes each (the object, its ``index`` int,
``key`` string and ``latency`` float, the list slot). Most of that is derivable: the index is
the position in an ordered batch, the key is ``str(index)`` without a checkpoint, errors and
call records are rare. So the columns are the item and value references, the attempts and
latencies as C arrays, and the rest only where it differs from what can be derived (about 32
bytes an item plus your item and value).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, overload

from .workers import Outcome

__all__ = ["Outcomes"]


class Outcomes(Sequence[Outcome]):
    """The outcomes of :func:`llmguard.batch`, in the order they were handed out.

    A read-only sequence (index, slice, iterate, ``len``, compare with a list): each
    :class:`~llmguard.Outcome` is built when read, equal to the one the batch produced.
    ``list(outcomes)`` makes a plain list.
    """

    __slots__ = ("_index", "_keys", "_items", "_values", "_attempts", "_latency", "_errors",
                 "_calls")

    def __init__(self) -> None:
        #: Positions whose index is not the position (unordered or interrupted batches): else None.
        self._index: array[int] | None = None
        #: Keys, once one is not ``str(index)`` (a checkpoint or ``key=``): else None.
        self._keys: list[str] | None = None
        self._items: list[Any] = []
        self._values: list[Any] = []
        self._attempts = array("I")
        self._latency = array("d")
        self._errors: dict[int, BaseException] = {}
        self._calls: dict[int, tuple[Any, ...]] = {}

    def _add(self, outcome: Outcome) -> None:
        position = len(self._items)
        index = outcome.index
        if self._index is not None:
            self._index.append(index)
        elif index != position:
            self._index = array("q", range(position))
            self._index.append(index)
        if self._keys is not None:
            self._keys.append(outcome.key)
        elif outcome.key != str(index):
            self._keys = [str(i) for i in self._indexes(position)]
            self._keys.append(outcome.key)
        self._items.append(outcome.item)
        self._values.append(outcome.value)
        self._attempts.append(outcome.attempts)
        self._latency.append(outcome.latency)
        if outcome.error is not None:
            self._errors[position] = outcome.error
        if outcome.calls:
            self._calls[position] = outcome.calls

    def _indexes(self, stop: int) -> Sequence[int]:
        return range(stop) if self._index is None else self._index[:stop]

    def _at(self, position: int) -> Outcome:
        index = position if self._index is None else self._index[position]
        key = str(index) if self._keys is None else self._keys[position]
        return Outcome(index, key, self._items[position], self._values[position],
                       self._errors.get(position), self._attempts[position],
                       self._latency[position], self._calls.get(position, ()))

    @overload
    def __getitem__(self, position: int) -> Outcome: ...

    @overload
    def __getitem__(self, position: slice) -> list[Outcome]: ...

    def __getitem__(self, position: int | slice) -> Outcome | list[Outcome]:
        if isinstance(position, slice):
            return [self._at(i) for i in range(*position.indices(len(self._items)))]
        position, size = operator.index(position), len(self._items)
        if not -size <= position < size:
            raise IndexError("Outcomes index out of range")
        return self._at(position % size)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Outcome]:
        return map(self._at, range(len(self._items)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Outcomes, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))
