"""The canonical form of a cache key's parts: JSON with sorted keys, tuples as lists, pydantic
models and dataclasses as their fields; the same text in every process (``hash()`` is salted per
process and ``repr`` depends on dict order). A value with no canonical form raises ``TypeError``
naming where it is: a silent wrong key would serve one user's answer to another prompt."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

__all__ = ["canonical_text", "digest", "stable_digest"]

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class _NoCanonicalForm(TypeError):
    def __init__(self, obj: Any) -> None:
        super().__init__()
        self.obj = obj
        self.path = ""  # filled in on the way out, so the fast path builds no strings


def _object_form(obj: Any) -> Any:
    """The JSON-able form of a non-JSON object (the encoder's ``default`` hook)."""
    if isinstance(obj, type):  # e.g. response_format=MyPydanticModel
        schema = getattr(obj, "model_json_schema", None)
        return {"__type__": f"{obj.__module__}.{obj.__qualname__}",
                "schema": schema() if callable(schema) else None}
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models (openai types, response_format)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted((_canonical(v) for v in obj), key=_dumps)
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    raise _NoCanonicalForm(obj)


def _canonical(obj: Any) -> Any:
    # The slow, explicit walk: used when the C encoder gave up, to find and name the culprit.
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        try:
            return {str(k): _canonical(v) for k, v in obj.items()}
        except _NoCanonicalForm as exc:
            exc.path = next(f"[{k!r}]" for k, v in obj.items() if _fails(v)) + exc.path
            raise
    if isinstance(obj, (list, tuple)):
        try:
            return [_canonical(v) for v in obj]
        except _NoCanonicalForm as exc:
            exc.path = next(f"[{i}]" for i, v in enumerate(obj) if _fails(v)) + exc.path
            raise
    return _canonical(_object_form(obj))


def _fails(value: Any) -> bool:
    try:
        _canonical(value)
    except _NoCanonicalForm:
        return True
    return False


_checked = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_object_form
).encode
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _make_encoder is None:  # no C accelerator (PyPy): the encoder builds its closures per call
    _encode = _checked
else:
    # One C encoder made once (JSONEncoder.encode makes a new one per call: half the cost of a
    # key). No circular-reference markers (a dict shared between threads would trip them); a
    # circular value recurses into RecursionError and is then encoded with the checks.
    _iterencode = _make_encoder(None, _object_form, json.encoder.encode_basestring, None, ":",
                                ",", True, False, True)

    def _encode(value: Any) -> str:
        try:
            return "".join(_iterencode(value, 0))
        except RecursionError:
            return _checked(value)  # raises ValueError("Circular reference detected")


def canonical_text(value: Any, where: str = "key") -> str:
    """``value``'s canonical JSON (sorted keys, no spaces): equal in every process.

    Raises ``TypeError`` naming the offending element when part of ``value`` has no stable form.
    """
    try:  # fast path: the C encoder, with a hook for pydantic models, dataclasses, sets, bytes
        return _encode(value)
    except TypeError:  # no stable form somewhere, or dict keys of mixed types: walk it slowly
        pass
    try:
        return _dumps(_canonical(value))
    except _NoCanonicalForm as exc:
        raise TypeError(
            f"cannot build a cache key: {where}{exc.path} is a {type(exc.obj).__qualname__}, "
            "which has no stable serialised form (JSON types, pydantic models and dataclasses "
            "do); pass Cache(key=lambda *args, **kwargs: ...) returning a str or tuple that "
            "identifies the request"
        ) from None


def digest(text: str) -> str:
    """sha256 hex digest of a canonical text (what a store shared across processes keys on)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def stable_digest(value: Any, where: str = "key") -> str:
    """sha256 hex digest of ``value``'s canonical JSON: equal in every process, dict order free.

    Raises ``TypeError`` naming the offending element when part of ``value`` has no stable form.
    """
    return digest(canonical_text(value, where))
