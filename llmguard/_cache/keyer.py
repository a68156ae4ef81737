"""The default key of a Cache, fast: a plan per guarded function, learned on its first call.

:func:`~llmguard._cache.key.default_key` finds the function's identity and binds the arguments
with ``inspect.Signature.bind`` on every call. A :class:`Keyer` reads the identity and the
signature once per function and binds the arguments itself when the signature is plain
(positional-or-keyword and keyword-only parameters, optionally ``**kwargs``), falling back to
``default_key``'s own code for anything else; the form it encodes is the same dict, so the key
is the same. The in-memory store keys on the canonical text itself (a dict hashes it once); a
shared store gets its sha256, equal to ``default_key``'s, in every process.
"""

from __future__ import annotations

import functools
import inspect
import json
import weakref
from collections.abc import Callable
from typing import Any

from .canonical import canonical_text, digest
from .identity import function_identity, serial
from .key import IGNORED_KWARGS, bound_arguments, is_default, is_method_of

__all__ = ["Keyer"]

#: How the canonical encoder (``ensure_ascii=False``) writes a str.
_quote = json.encoder.encode_basestring
_REQUIRED = inspect.Parameter.empty
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
#: Where an argument without a canonical form is, in the error (as default_key names it).
_WHERE = "call['args']"
#: Keys remembered per function for calls whose arguments are all str (``ask(system, prompt)``):
#: a hit or a repeated question then costs a dict lookup instead of binding and encoding.
#: Only str: 1, 1.0 and True are equal as dict keys but are different arguments. A
#: one-parameter function's key is one concatenation, not remembered: remembering it cost a
#: miss 1,500 instructions (the argument's hash, the entry) and saved the README stack's hit
#: of one same str object 540 (the new key's hash); a prompt built anew per call gains none.
MEMO = 1024
#: What follows a one-parameter function's identity in the key of a call whose argument is a
#: str: the str as it is. Every other in-memory key has the arguments' JSON there, which starts
#: with ``{``, so the two never meet (the identity has two NULs and no ``\x01``: see _Plan).
_RAW = "\x01"


class _Plan:
    """What a function's keys need, read once: its identity, its parameters and defaults."""

    __slots__ = ("fn", "name", "who", "names", "defaults", "required", "var_kw", "dotted",
                 "memo", "prefix", "order", "single", "param")

    def __init__(self, fn: Any, namespace: str | None,
                 parameters: list[inspect.Parameter]) -> None:
        self.fn = weakref.ref(fn)
        self.name, instance = function_identity(fn)
        #: The identity part of the form: process-local instance, or the shared namespace.
        self.who = ("ns", namespace) if namespace is not None else ("of", instance)
        #: Parameters that take positional arguments, in order.
        self.names = [p.name for p in parameters if p.kind is _POSITIONAL]
        #: Every named parameter -> its default (``_REQUIRED`` for none).
        self.defaults = {p.name: p.default for p in parameters if p.kind is not _VAR_KEYWORD}
        self.required = [name for name, default in self.defaults.items() if default is _REQUIRED]
        self.var_kw = any(p.kind is _VAR_KEYWORD for p in parameters)
        #: A function decorated in a class body has a dotted qualname (see ``is_method_of``).
        self.dotted = "." in getattr(fn, "__qualname__", "")
        #: Positional str arguments -> their in-memory key (see MEMO).
        self.memo: dict[tuple[str, ...], str] = {}
        #: For a plain function (every parameter positional and required, none ignored): the
        #: in-memory key's text up to its arguments, and the parameters' quoted names with
        #: their positions in key order; a call with every argument a str is then keyed by
        #: quoting each (what the canonical encoder writes for them), without building a form.
        self.prefix: str | None = None
        self.order: list[tuple[str, int]] = []
        #: For a plain function of one parameter: its key's text up to a str argument, which
        #: follows as it is (``send_message(prompt)``: a new question's key is one concatenation,
        #: no quoting), and the parameter's name (its keyword form is that key too).
        self.single: str | None = None
        self.param: str | None = None
        # (A str first argument is a receiver only for a function in a class named str.)
        plain = not self.var_kw and len(self.names) == len(self.required) and not getattr(
            fn, "__qualname__", "").startswith("str.")
        if plain and self.names and not IGNORED_KWARGS.intersection(self.names):
            kind, who = self.who
            self.prefix = f"{self.name}\0{kind}={who}\0"
            self.order = sorted((_quote(name), i) for i, name in enumerate(self.names))
            if len(self.order) == 1 and self.prefix.count("\0") == 2 and _RAW not in self.prefix:
                self.single, self.param = f"{self.prefix}{_RAW}", self.names[0]

    def text(self, args: tuple[str, ...]) -> str:
        """The in-memory key of a call whose arguments are all str, one per parameter."""
        inner = ",".join([f"{name}:{_quote(args[i])}" for name, i in self.order])
        return f"{self.prefix}{{{inner}}}"


def _plan(fn: Any, namespace: str | None) -> _Plan | None:
    """The plan of ``fn``, or None when its keys must take the general path."""
    if isinstance(fn, functools.partial):  # its bound arguments may change: key them per call
        return None
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind not in (_POSITIONAL, _KEYWORD, _VAR_KEYWORD) for p in parameters):
        return None  # positional-only or *args: Signature.bind decides
    try:
        return _Plan(fn, namespace, parameters)
    except TypeError:  # not weakly referenceable
        return None


class Keyer:
    """The default key of any call through one Cache (``hashed``: a sha256 digest for a store
    shared across processes; else the canonical text, for the in-memory store)."""

    __slots__ = ("namespace", "hashed", "_plans")

    def __init__(self, namespace: str | None, hashed: bool) -> None:
        self.namespace = namespace
        self.hashed = hashed
        #: id(fn) -> plan (or None: the general path), dropped when fn is collected.
        self._plans: dict[int, _Plan | None] = {}

    def __call__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> str:
        plan = self._plans.get(id(fn), False)
        if plan is False or (plan is not None and plan.fn() is not fn):
            plan = self._learn(fn)
        if plan is not None and not kwargs and not self.hashed:
            single = plan.single
            if single is not None and len(args) == 1 and type(args[0]) is str:
                # One concatenation (see _RAW), not remembered (see MEMO).
                return single + args[0]
            for value in args:
                if type(value) is not str:
                    break
            else:
                key = plan.memo.get(args)  # type: ignore[arg-type]
                if key is None:
                    if plan.prefix is not None and len(args) == len(plan.names):
                        key = plan.text(args)  # type: ignore[arg-type]
                    else:
                        key = self._text(fn, plan, args, kwargs)
                    if len(plan.memo) >= MEMO:
                        plan.memo.clear()
                    plan.memo[args] = key  # type: ignore[index]
                return key
        return self._text(fn, plan, args, kwargs)

    def _text(self, fn: Callable[..., Any], plan: _Plan | None, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> str:
        form = None if plan is None else self._form(plan, args, kwargs)
        if form is None:
            form = self._general(fn, args, kwargs)
        if self.hashed:
            return digest(canonical_text(form, "call"))
        # In memory: the identity as plain text (no NUL in a qualname), then the arguments' JSON
        # (or a one-parameter function's str argument as it is, as the fast path writes it).
        kind = "ns" if "ns" in form else "of"
        if plan is not None and plan.single is not None and len(form["args"]) == 1:
            value = form["args"].get(plan.param)
            if type(value) is str and form["fn"] == plan.name and (kind, form[kind]) == plan.who:
                return plan.single + value
        arguments = canonical_text(form["args"], _WHERE)
        return f"{form['fn']}\0{kind}={form[kind]}\0{arguments}"

    def _learn(self, fn: Any) -> _Plan | None:
        plan = _plan(fn, self.namespace)
        plans, key = self._plans, id(fn)
        if len(plans) > 4096:  # unweakable callables are never dropped: bound the table
            plans.clear()
        plans[key] = plan
        if plan is not None:
            plan.fn = weakref.ref(fn, lambda _ref: plans.pop(key, None))
        return plan

    def _form(self, plan: _Plan, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The form ``default_key`` hashes, or None where binding would fail (then the general
        path keys the call as given, as ``default_key`` does)."""
        names = plan.names
        if len(args) > len(names):
            return None
        bound = dict(zip(names, args))
        method = plan.dotted and bool(args) and is_method_of(plan.fn(), args[0])
        arguments: dict[str, Any] = {}
        defaults = plan.defaults
        for name, value in kwargs.items():
            if name in bound:
                return None  # given twice
            if name in defaults:
                bound[name] = value
            elif plan.var_kw:
                if name not in IGNORED_KWARGS:  # merged in by name, defaults not compared
                    arguments[name] = value
            else:
                return None  # an unexpected keyword
        for name in plan.required:
            if name not in bound:
                return None
        if method:
            del bound[names[0]]
        for name, value in bound.items():
            default = defaults[name]
            if value is default or name in IGNORED_KWARGS or (
                    default is not _REQUIRED and is_default(value, default)):
                continue
            arguments[name] = value
        kind, who = plan.who
        if method and kind == "of":
            who += f"@{serial(args[0])}"
        return {"fn": plan.name, kind: who, "args": arguments}

    def _general(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """``default_key``'s form, built its way."""
        name, instance = function_identity(fn)
        method = bool(args) and is_method_of(fn, args[0])
        if method:
            instance += f"@{serial(args[0])}"
        arguments = bound_arguments(fn, args, kwargs, skip_self=method)
        who = {"fn": name, "ns": self.namespace} if self.namespace is not None else {
            "fn": name, "of": instance}
        return {**who, "args": arguments}
