"""Reading the applications' TOML config files (``llmguard serve --config``, ``llmguard run
--config``): value checks and the line-aware reader.

Each key of a table has a check that converts its value or raises :class:`Bad` saying what was
expected; :class:`Reader` turns that into a :class:`ConfigError` naming the key and its line.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

__all__ = ["Bad", "ConfigError", "Reader", "boolean", "integer", "number", "one_of",
           "read_toml", "string", "strings"]


class ConfigError(ValueError):
    """The config file is unusable; the message names the key and (where found) the line."""


class Bad(Exception):
    """A value check failed; the message says what was expected ("an integer >= 1")."""


def integer(low: int = 1, high: int | None = None) -> Any:
    """Check: an integer in ``[low, high]`` (not a bool)."""
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high and v > high):
            raise Bad(f"an integer >= {low}" + (f" and <= {high}" if high else ""))
        return v
    return check


def number(low_open: bool = True) -> Any:
    """Check: a finite number > 0 (>= 0 unless ``low_open``)."""
    def check(v: Any) -> float:
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        if bad or v < 0 or (low_open and v == 0):
            raise Bad("a number " + ("> 0" if low_open else ">= 0") + " (seconds or USD)")
        return float(v)
    return check


def string(v: Any) -> str:
    """Check: a non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise Bad("a non-empty string")
    return v


def boolean(v: Any) -> bool:
    """Check: true or false."""
    if not isinstance(v, bool):
        raise Bad("true or false")
    return v


def strings(v: Any) -> tuple[str, ...]:
    """Check: a string or a list of strings, as a tuple."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise Bad("a list of strings")
    return tuple(v)


def one_of(*choices: str) -> Any:
    """Check: one of ``choices``."""
    def check(v: Any) -> str:
        if v not in choices:
            raise Bad("one of " + ", ".join(repr(c) for c in choices))
        return v
    return check


class Reader:
    """Validation with line lookup: ``fail(path, problem)`` raises a ConfigError."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.lines = source, text.splitlines()

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path`` (a table header or ``key =`` inside its table), if found; the
        i-th ``[[name]]`` table is ``(*name, str(i))``."""
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines, 1):
            header = re.match(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$", line)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    arrays[table] = arrays.get(table, -1) + 1
                    table = (*table, str(arrays[table]))
                if table[:len(path)] == path:  # the table itself, or its first sub-table
                    return number
                continue
            key = re.match(r"\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*=", line)
            if key and (*table, key.group(1)) == path:
                return number
        return None

    def fail(self, path: tuple[str, ...], problem: str) -> ConfigError:
        """The error (to raise) saying ``problem`` of ``path``, with its line where found."""
        line = self.line_of(path)
        where = f"{self.source}" + (f", line {line}" if line else "")
        return ConfigError(f"{where}: {'.'.join(path)}: {problem}")

    def section(self, path: tuple[str, ...], table: Any, keys: dict[str, Any],
                renames: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The values of ``table`` (the table at ``path``), each converted by its key's check
        in ``keys``, under its field's name (``renames``: TOML key -> field, where they
        differ); a ConfigError for an unknown key (naming the closest known one) or a value
        its check refused."""
        if not isinstance(table, dict):
            raise self.fail(path, "must be a table ([" + ".".join(path) + "])")
        out = {}
        for key, value in table.items():
            check = keys.get(key)
            if check is None:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail((*path, key), f"unknown key{hint}; known: {', '.join(keys)}")
            try:
                out[renames.get(key, key) if renames else key] = check(value)
            except Bad as exc:
                raise self.fail((*path, key), f"must be {exc}, got {value!r}") from None
        return out


def read_toml(path: str) -> tuple[dict[str, Any], Reader]:
    """The TOML document at ``path`` and a :class:`Reader` over its text; raises
    :class:`ConfigError` naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path!r}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message already says "(at line N, column M)"
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data, Reader(path, text)
