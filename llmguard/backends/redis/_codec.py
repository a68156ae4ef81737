"""How RedisStore turns a cached answer into bytes and back, unchanged.

Plain JSON changes what it stores: ``{1: 0.5}`` comes back as ``{"1": 0.5}`` and a tuple as a
list, so a hit would answer differently from the miss that stored it. Pickle is faithful but
unpickling runs code chosen by whoever can write to the Redis (only on request); ``marshal`` is
faithful for builtin types but its format changes between Python versions (workers sharing a
Redis may differ) and it is not safe against crafted bytes. So the default is JSON with type
tags: what JSON has no form for (a tuple, a dict with keys that are not str, a set, bytes)
is written as ``{"__llmguard__": "<type>", "items": ...}`` and read back as that type; plain
JSON-shaped answers (dicts with str keys, lists, str, numbers) are written as they are, so
entries stored before the tags existed read the same. A value of any other type (an SDK object,
a subclass of a builtin) raises ``TypeError``: not cached (the call still succeeds), never
changed. Loading only ever builds builtin containers: no code runs.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

__all__ = ["Codec", "TAG"]

#: The key of a tagged object.
TAG = "__llmguard__"
_PLAIN = (str, int, float, bool, type(None))


def _tagged(value: Any) -> Any:
    """``value`` with every part JSON would change replaced by its tagged form."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_tagged(item) for item in value]
    if kind is dict:
        if all(type(key) is str for key in value) and TAG not in value:
            return {key: _tagged(item) for key, item in value.items()}
        return {TAG: "dict", "items": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    if kind is tuple:
        return {TAG: "tuple", "items": [_tagged(item) for item in value]}
    if kind is set or kind is frozenset:
        return {TAG: kind.__name__, "items": [_tagged(item) for item in value]}
    if kind is bytes:
        return {TAG: "bytes", "items": base64.b64encode(value).decode("ascii")}
    raise TypeError(
        f"RedisStore's JSON serializer stores dicts, lists, tuples, sets, str, bytes and "
        f"numbers, not a {kind.__qualname__}: not cached (the call succeeded); cache a plain "
        "form of the answer, or pass serializer='pickle' (only for a Redis you trust)"
    )


_DECODE = {
    "dict": lambda items: {_hashable(k): v for k, v in items},
    "tuple": tuple,
    "set": lambda items: {_hashable(item) for item in items},
    "frozenset": lambda items: frozenset(_hashable(item) for item in items),
    "bytes": base64.b64decode,
}


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):  # only a tampered entry has one as a key
        raise ValueError("a tagged cache entry has an unhashable key")
    return key


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "items" in obj:
        decode = _DECODE.get(obj.get(TAG))  # type: ignore[arg-type]
        if decode is not None:
            return decode(obj["items"])
    return obj


def dumps(value: Any) -> bytes:
    """``value`` as tagged JSON bytes (``TypeError`` for a type it cannot keep unchanged)."""
    return json.dumps(_tagged(value), separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """What :func:`dumps` was given, equal and of the same types."""
    return json.loads(data, object_hook=_untag)


class Codec:
    """The ``dumps``/``loads`` pair a RedisStore uses, from its ``serializer`` argument."""

    __slots__ = ("dumps", "loads")

    def __init__(self, serializer: Any) -> None:
        if serializer == "json":
            self.dumps, self.loads = dumps, loads
        elif serializer == "pickle":  # only on request: unpickling runs code from the store
            self.dumps, self.loads = pickle.dumps, pickle.loads
        elif callable(getattr(serializer, "dumps", None)) and callable(
                getattr(serializer, "loads", None)):
            self.dumps, self.loads = serializer.dumps, serializer.loads
        else:
            error = ValueError if isinstance(serializer, str) else TypeError
            raise error(
                f"serializer must be 'json' (default), 'pickle' (only for a Redis you trust: "
                f"unpickling runs code) or an object with dumps/loads, got {serializer!r}"
            )
