"""Cache keys for LLM calls: a stable hash over everything that affects the output.

A key must be equal for calls that would produce the same answer and different otherwise, in
every process (the Redis store shares entries across workers). Python's ``hash()`` is salted per
process and ``repr`` depends on dict order, so the key is a sha256 over canonical JSON: dicts with
sorted keys, tuples as lists, pydantic models and dataclasses as their fields. A value that has no
canonical form raises ``TypeError`` naming the argument: a silent wrong key would serve one
user's answer to another prompt. The canonical form is ``canonical.py``, a function's identity
``identity.py``; ``keyer.py`` builds the same keys faster, with a plan per function.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from .canonical import canonical_text, digest, stable_digest
from .identity import function_identity, serial

__all__ = ["IGNORED_KWARGS", "bound_arguments", "canonical_text", "custom_key", "default_key",
           "digest", "function_identity", "is_default", "is_method_of", "serial", "stable_digest"]

#: Keyword arguments that change how a request is sent, not what the model answers; they are
#: left out of the default key. Anything else (model, messages, temperature, tools, seed,
#: response_format, max_tokens, ...) is part of it. Pass ``Cache(key=...)`` to decide otherwise.
IGNORED_KWARGS = frozenset(
    {
        "timeout", "request_timeout", "metadata", "user", "api_key", "extra_headers",
        "max_retries", "num_retries", "stream_options",
    }
)


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
        elif not is_default(value, parameter.default):
            named[name] = value
    return {k: v for k, v in named.items() if k not in IGNORED_KWARGS}


def is_default(value: Any, default: Any) -> bool:
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
    method = bool(args) and is_method_of(fn, args[0])
    if method:  # self is named by the instance part, not hashed as an argument
        instance += f"@{serial(args[0])}"
    arguments = bound_arguments(fn, args, kwargs, skip_self=method)
    who = {"fn": name, "ns": namespace} if namespace is not None else {"fn": name, "of": instance}
    return stable_digest({**who, "args": arguments}, "call")


def is_method_of(fn: Any, receiver: Any) -> bool:
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
