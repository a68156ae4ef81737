"""Cache keys for LLM calls: a stable hash over everything that affects the output.

A key must be equal for calls that would produce the same answer and different otherwise, in
every process (the Redis store shares entries across workers). Python's ``hash()`` is salted per
process and ``repr`` depends on dict order, so the key is a sha256 over canonical JSON: dicts with
sorted keys, tuples as lists, pydantic models and dataclasses as their fields. A value that has no
canonical form raises ``TypeError`` naming the argument: a silent wrong key would serve one
user's answer to another prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["IGNORED_KWARGS", "custom_key", "default_key", "stable_digest"]

#: Keyword arguments that change how a request is sent, not what the model answers; they are
#: left out of the default key. Anything else (model, messages, temperature, tools, seed,
#: response_format, max_tokens, ...) is part of it. Pass ``Cache(key=...)`` to decide otherwise.
IGNORED_KWARGS = frozenset(
    {
        "timeout", "request_timeout", "metadata", "user", "api_key", "extra_headers",
        "max_retries", "num_retries", "stream_options",
    }
)

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


_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_object_form
).encode


def stable_digest(value: Any, where: str = "key") -> str:
    """sha256 hex digest of ``value``'s canonical JSON: equal in every process, dict order free.

    Raises ``TypeError`` naming the offending element when part of ``value`` has no stable form.
    """
    try:  # fast path: the C encoder, with a hook for pydantic models, dataclasses, sets, bytes
        text = _encode(value)
    except TypeError:  # no stable form somewhere, or dict keys of mixed types: walk it slowly
        text = None
    try:
        if text is None:
            text = _dumps(_canonical(value))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    except _NoCanonicalForm as exc:
        raise TypeError(
            f"cannot build a cache key: {where}{exc.path} is a {type(exc.obj).__qualname__}, "
            "which has no stable serialised form (JSON types, pydantic models and dataclasses "
            "do); pass Cache(key=lambda *args, **kwargs: ...) returning a str or tuple that "
            "identifies the request"
        ) from None


def _skip_self(fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    # A decorated method receives ``self`` first. Including it would make every instance (and every
    # process) miss, although the instance rarely changes the answer: the request is in the other
    # arguments. So the receiver counts by its class (already in the qualname), not its identity.
    if not args:
        return False
    owner = type(args[0]).__qualname__
    return getattr(fn, "__qualname__", "").startswith(owner + ".")


def default_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The default cache key of ``fn(*args, **kwargs)``.

    Hashes the function's ``module.qualname``, the positional arguments (a method's ``self`` is
    left out, see above) and every keyword argument except :data:`IGNORED_KWARGS`.
    """
    if _skip_self(fn, args):
        args = args[1:]
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    kept = {k: v for k, v in kwargs.items() if k not in IGNORED_KWARGS}
    return stable_digest({"fn": name, "args": args, "kwargs": kept}, "call")


def custom_key(key: Callable[..., Hashable], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Run a user's ``key(*args, **kwargs)`` and turn its result into a store key (a str)."""
    result = key(*args, **kwargs)
    if isinstance(result, str):
        return result
    try:
        hash(result)
    except TypeError:
        raise TypeError(
            f"Cache(key=...) returned an unhashable {type(result).__qualname__} ({result!r:.80}); "
            "return a str or a tuple of str/int/float"
        ) from None
    return stable_digest(result, "the value Cache(key=...) returned")
