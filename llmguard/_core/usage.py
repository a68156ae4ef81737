"""``Usage``: the tokens a call consumed, made once per answered call (read from its result).

Made on every answered call (:func:`.tokens.extract_usage`), so it is a tuple underneath: a
frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (about 7,500
instructions a call under callgrind), where a tuple is built in one C call
(``tuple.__new__(Usage, fields)``, as :func:`.tokens.extract_usage` makes it). It keeps the dataclass's surface:
the fields by name and position (with their defaults), ``total_tokens``, the dataclass
``repr``, equality with another ``Usage`` only (a plain tuple of the same numbers is not
equal), the same hash, immutability (``FrozenInstanceError``), no ordering, pickling, and
``dataclasses.fields``/``asdict``/``replace`` (the fields are declared as a dataclass's).
"""

from __future__ import annotations

import dataclasses
from operator import itemgetter
from typing import Any

from .public import public

__all__ = ["Usage"]

_new = tuple.__new__
_eq, _ne = tuple.__eq__, tuple.__ne__


@dataclasses.dataclass(frozen=True)
class _Fields:
    """The fields as a dataclass declares them (what ``dataclasses.fields`` reads)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


def _unordered(op: str) -> Any:
    """``op`` raising TypeError, as on a dataclass without ``order=True`` (not a tuple's
    order, not even against a plain tuple)."""
    def compare(self: Any, other: Any) -> Any:
        raise TypeError(f"'{op}' not supported between instances of "
                        f"{type(self).__name__!r} and {type(other).__name__!r}")
    return compare


@public
class Usage(tuple):  # type: ignore[type-arg]
    """Tokens a call actually consumed. ``input_tokens`` counts the whole prompt, cached parts
    included (as the GenAI conventions ask; Anthropic reports them apart and they are added);
    ``cache_read_tokens`` of it were read from the provider's prompt cache and
    ``cache_creation_tokens`` written to it. Immutable; equal to a ``Usage`` of the same
    counts."""

    __slots__ = ()
    __match_args__ = ("input_tokens", "output_tokens", "cache_read_tokens",
                      "cache_creation_tokens")
    __dataclass_fields__ = _Fields.__dataclass_fields__  # type: ignore[assignment]
    __dataclass_params__ = _Fields.__dataclass_params__  # type: ignore[attr-defined]

    def __new__(cls, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                cache_creation_tokens: int = 0) -> Usage:
        return _new(cls, (input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens))

    input_tokens: int = property(itemgetter(0))  # type: ignore[assignment]
    output_tokens: int = property(itemgetter(1))  # type: ignore[assignment]
    cache_read_tokens: int = property(itemgetter(2))  # type: ignore[assignment]
    cache_creation_tokens: int = property(itemgetter(3))  # type: ignore[assignment]

    @property
    def total_tokens(self) -> int:
        return self[0] + self[1]

    def __repr__(self) -> str:
        return (f"{type(self).__qualname__}(input_tokens={self[0]!r}, output_tokens={self[1]!r}, "
                f"cache_read_tokens={self[2]!r}, cache_creation_tokens={self[3]!r})")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return _eq(self, other)
        # not a tuple's equality: a plain tuple (tried reflected, as a tuple) is not equal
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return _ne(self, other)
        return True if isinstance(other, tuple) else NotImplemented

    __hash__ = tuple.__hash__  # a frozen dataclass's: the hash of its fields' tuple
    __lt__, __le__, __gt__, __ge__ = map(_unordered, ("<", "<=", ">", ">="))

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __getnewargs__(self) -> tuple[int, ...]:
        return tuple(self)  # pickle and copy: ``Usage(*fields)``

