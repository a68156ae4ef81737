"""Checks of ``llmguard run``'s paths and URLs: each returns why an option is unusable, or None."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from .._core.redact import redact_url
from .exits import EXIT_USAGE

__all__ = ["api_base_problem", "number_type", "output_problem", "same_file", "usage_error"]


def usage_error(message: str) -> int:
    """Print ``message`` as a usage error of ``llmguard run``; returns the exit code (2)."""
    print(f"llmguard run: error: {message} (see llmguard run --help)", file=sys.stderr)
    return EXIT_USAGE


def same_file(a: str, b: str) -> bool:
    """True when both paths name one file (symlinks and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # b does not exist yet: compare where it would be created
        return os.path.realpath(a) == os.path.realpath(b)


def output_problem(path: str, *, append: bool) -> str | None:
    """Why OUTPUT cannot be written, or None.

    Probes by opening it for appending; a file the probe created is removed again unless
    ``append``, so a later usage error leaves no new OUTPUT behind.
    """
    if os.path.isdir(path):
        return (f"output {path!r} is a directory; pass a file path, e.g. "
                f"{path.rstrip('/')}/out.jsonl")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return f"the directory of output {path!r} does not exist; create it"
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return f"cannot write output {path!r} ({exc.strerror}); pick a writable path"
    if not existed and not append:
        os.remove(path)
    return None


def api_base_problem(url: str) -> str | None:
    """Why ``--api-base`` is not an http(s) URL, or None (the URL is shown without secrets)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return (f"--api-base must be an http(s) URL such as http://localhost:8000/v1, got "
                f"{redact_url(url)!r}")
    return None


def number_type(kind: Callable[[str], Any], *, minimum: float = 0, strict: bool = True,
            maximum: float | None = None, unit: str = "") -> Callable[[str], Any]:
    """An argparse type that names what is wrong (argparse prefixes the option's name)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}{unit}, got {text!r}"
            ) from None
        bad = not math.isfinite(value) or (value <= minimum if strict else value < minimum)
        if bad:
            op = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {op} {minimum:g}{unit}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}{unit}, got {text}")
        return value

    return parse
