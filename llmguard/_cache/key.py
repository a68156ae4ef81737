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
import functools
import hashlib
import inspect
import itertools
import json
import weakref
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["IGNORED_KWARGS", "bound_arguments", "custom_key", "default_key", "function_identity",
           "stable_digest"]

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


class _Serials:
    """Process-local names for objects that have no name valid in other processes (closures,
    instances, partials of unserialisable arguments). A serial is never reused, unlike ``id()``,
    so a new closure never reads a dead one's entries."""

    def __init__(self) -> None:
        self._weak: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[Any, int]] = {}  # objects that refuse weak references
        self._next = itertools.count(1)

    def __call__(self, obj: Any) -> int:
        try:
            serial = self._weak.get(obj)
            if serial is None:
                serial = self._weak[obj] = next(self._next)
            return serial
        except TypeError:  # not weakly referenceable (or unhashable): keep it alive instead
            held = self._strong.get(id(obj))
            if held is None or held[0] is not obj:
                held = self._strong[id(obj)] = (obj, next(self._next))
            return held[1]


_serial = _Serials()


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or ''}.{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


def function_identity(fn: Any) -> tuple[str, str]:
    """``(name, instance)`` of a guarded callable: ``name`` is the same in every process
    (``module.qualname``); ``instance`` tells apart what shares that name in one process (two
    closures from one factory, bound methods of two agents, partials with different objects
    bound), and is ``""`` when nothing does (a module-level function: then keys are stable
    across processes, which is what lets a Redis store share entries)."""
    if isinstance(fn, functools.partial):
        name, instance = function_identity(fn.func)
        try:
            bound = stable_digest([fn.args, fn.keywords], "partial")
        except TypeError:
            bound = f"#{_serial(fn)}"
        return name, f"{instance}({bound})"
    if inspect.ismethod(fn):
        name, instance = function_identity(fn.__func__)
        return name, f"{instance}@{_serial(fn.__self__)}"
    name = _qualified(fn)
    if inspect.isfunction(fn) or inspect.isasyncgenfunction(fn):
        return name, f"#{_serial(fn)}" if "<locals>" in fn.__qualname__ else ""
    if inspect.isbuiltin(fn) or inspect.ismethoddescriptor(fn):
        owner = getattr(fn, "__self__", None)
        return name, "" if owner is None or inspect.ismodule(owner) else f"@{_serial(owner)}"
    return name, f"#{_serial(fn)}"  # a callable object: its state may change its answers


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: key on the raw arguments
        return None


_signatures: weakref.WeakKeyDictionary[Any, inspect.Signature | None] = weakref.WeakKeyDictionary()


def bound_arguments(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    skip_self: bool = False) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults filled in, so the positional, keyword
    and explicit-default forms of one call are one key; ``**kwargs`` are merged in by name."""
    try:
        signature = _signatures[fn] if fn in _signatures else _signatures.setdefault(fn, _signature(fn))
    except TypeError:  # not weakly referenceable
        signature = _signature(fn)
    raw = {"args": args[1:] if skip_self else args,
           "kwargs": {k: v for k, v in kwargs.items() if k not in IGNORED_KWARGS}}
    if signature is None:
        return raw
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:  # the call itself will fail; key it as given
        return raw
    # Arguments equal to their parameter's default are left out rather than filled in: then
    # "omitted" and "given explicitly" are one key, and sentinel defaults (the openai SDK's
    # `omit`/`NOT_GIVEN`, which have no serialised form) never reach it.
    named: dict[str, Any] = {}
    items = iter(bound.arguments.items())
    if skip_self:
        next(items, None)
    parameters = signature.parameters
    for name, value in items:
        parameter = parameters[name]
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif not _is_default(value, parameter.default):
            named[name] = value
    return {k: v for k, v in named.items() if k not in IGNORED_KWARGS}


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    return (type(value) is type(default) and type(value) in (str, int, float, bool)
            and value == default)


def default_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                namespace: str | None = None) -> str:
    """The default cache key of ``fn(*args, **kwargs)``.

    Hashes the function's identity (:func:`function_identity`: a method decorated in a class
    body counts its ``self`` as part of it) and its arguments bound to its signature, without
    :data:`IGNORED_KWARGS`. With ``namespace`` the process-local part of the identity is
    replaced by it: functions (or agents) under one namespace share entries, in every process.
    """
    name, instance = function_identity(fn)
    method = bool(args) and _is_method_of(fn, args[0])
    if method:  # self is named by the instance part, not hashed as an argument
        instance += f"@{_serial(args[0])}"
    arguments = bound_arguments(fn, args, kwargs, skip_self=method)
    who = {"fn": name, "ns": namespace} if namespace is not None else {"fn": name, "of": instance}
    return stable_digest({**who, "args": arguments}, "call")


def _is_method_of(fn: Any, receiver: Any) -> bool:
    """A function decorated in a class body receives its instance first."""
    return getattr(fn, "__qualname__", "").startswith(type(receiver).__qualname__ + ".")


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
