"""JSON encoders made once: :func:`encoder` returns a function encoding a value to ``str``.

Why not ``json.JSONEncoder(...).encode``: it builds the C encoder and its closures again on
every call, a fixed cost of about 1.5 us that is most of what encoding a small answer, request
or record costs (the gateway encodes two per request, ``llmguard run`` two per line).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["encoder"]


def encoder(*, compact: bool = False, ascii: bool = True,
            default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.dumps`` with these options as a function made once: ``compact`` drops the spaces
    after separators, ``ascii`` escapes non-ASCII text (so the result always encodes as UTF-8,
    lone surrogates too), ``default`` turns what JSON cannot hold into what it can.

    No circular-reference check on the fast path: a circular value recurses into
    ``RecursionError`` and is then encoded by ``JSONEncoder``, which raises ``ValueError``."""
    separators = (",", ":") if compact else (", ", ": ")
    checked = json.JSONEncoder(separators=separators, ensure_ascii=ascii,
                               default=default).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (PyPy)
        return checked
    quote = json.encoder.encode_basestring_ascii if ascii else json.encoder.encode_basestring
    iterencode = make(None, default or _unserializable, quote, None, separators[1],
                      separators[0], False, False, True)

    def encode(value: Any) -> str:
        if isinstance(value, str):  # the C encoder's iterencode takes containers and scalars
            return quote(value)
        try:
            return "".join(iterencode(value, 0))
        except RecursionError:
            return checked(value)

    return encode


def _unserializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
