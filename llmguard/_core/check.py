"""Argument checks shared by constructors: early errors that name the argument and the fix.

A value that is not a number at all (a str, None, ``True``: bool is not a count) raises
``TypeError``; a number that does not fit (out of range, fractional where a count is due, NaN,
an infinity) raises ``ValueError``. "No limit" is spelled ``None``
where an argument allows it, never ``float("inf")``, so every accepted number is finite.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["callable_or_none", "number", "seed", "text", "token_count"]


def _describe(integer: bool, unit: str, low: float, low_open: bool, high: float | None,
              high_open: bool) -> str:
    """E.g. "a positive integer", "a positive number of seconds", "a number in (0, 1]"."""
    kind = "integer" if integer else f"number{unit}"
    if high is None and low == 0 and low_open:
        return f"a positive {kind}"
    article = "an" if integer else "a"
    if high is None:
        return f"{article} {kind} {'>' if low_open else '>='} {low:g}"
    return f"{article} {kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    optional: bool = False,
    low: float = 0,
    low_open: bool = True,
    high: float | None = None,
    high_open: bool = False,
    unit: str = "",
    what: str | None = None,
    hint: str = "",
) -> Any:
    """Return ``value`` if it is a finite int (or float, unless ``integer``) within the range
    ``low``..``high`` (each end open or closed), or None when ``optional``; else raise naming
    ``name``. ``unit`` reads "a number of seconds"; ``what`` replaces the whole description;
    ``hint`` is appended to the message ("; pass None for no bound")."""
    if value is None and optional:
        return None
    what = what or _describe(integer, unit, low, low_open, high, high_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}{hint}")
    # An int needs no finiteness check (and math.isfinite overflows on ints beyond a float).
    if not (isinstance(value, int) or math.isfinite(value)):
        raise ValueError(f"{name} must be {what} and finite, got {value!r}{hint}")
    if not (
        (isinstance(value, int) or not integer)
        and (value > low if low_open else value >= low)
        and (high is None or (value < high if high_open else value <= high))
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}{hint}")
    return value


def text(name: str, value: Any, *, hint: str = "") -> str:
    """Return ``value`` if it is a non-empty str; else raise naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a non-empty string, got {type(value).__name__} {value!r}{hint}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string, got ''{hint}")
    return value


def seed(value: Any) -> int | None:
    """Return a random seed if it is an int or None (random.Random also takes str and float, but
    a seed that is not an int is almost always a mistake, e.g. a rate passed by position)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"seed must be an int (or None for a different run each time), got {value!r}")
    return value


def callable_or_none(name: str, value: Any, what: str = "a callable") -> Any:
    """Return ``value`` if it is None or callable; else raise ``TypeError`` naming ``name``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be {what} or None, got {value!r}")
    return value


def admission(priority: Any, partition: Any, source: str = "") -> None:
    """Raise ``TypeError`` unless ``priority`` is an int and ``partition`` hashable."""
    if not isinstance(priority, int):
        raise TypeError(f"priority{source} must be an int (higher first), got {priority!r}")
    try:
        hash(partition)
    except TypeError:
        raise TypeError(
            f"partition{source} must be hashable (a str, int or tuple naming e.g. the tenant), "
            f"got {type(partition).__name__} {partition!r}"
        ) from None


def token_count(value: Any, source: str) -> int:
    """A per-call token count (an estimate or a usage) as a whole number ``>= 0``; else raise
    naming ``source`` (e.g. ``"RateLimit(tokens=...)"``) and what it returned.

    Checked at the call, so one bad value fails that call alone: a NaN compares false with
    everything and would wait at the head of a line for ever, a negative one would reserve
    room the provider never gave (``max_tokens=-100000`` let 4,980 tokens through tpm=1,000)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{source} must return a number of tokens (an int >= 0), got "
                        f"{type(value).__name__} {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{source} returned {value!r} for this call; a token count must be "
                             "a finite number >= 0 (fix the estimate, or pass tokens=)")
        return math.ceil(value)
    if value < 0:
        raise ValueError(f"{source} returned {value!r} for this call; a token count must be "
                         ">= 0 (a negative max_tokens? fix the call's arguments or tokens=)")
    return value
