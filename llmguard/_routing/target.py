"""A deployment's target: another client's method (called directly), or a dict of keyword
overrides for the layers below (``{"model": "gpt-4o-eu"}``), as Fallback's alternates are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.call import Call
from .._core.layer import Handler, invoke, is_async_callable
from .._core.redact import redact

__all__ = ["check_target", "to_target"]


async def to_target(target: Any, call: Call, call_next: Handler) -> Any:
    """Send ``call`` to ``target``: with its overrides through ``call_next``, or to the other
    client directly (:func:`invoke` starts a stream)."""
    if isinstance(target, dict):
        call.kwargs = {**call.kwargs, **target}
        return await call_next(call)
    call.fn = target
    return await invoke(call)


def check_target(target: Any, name: Any) -> Any:
    """``target`` if it is an async callable or a non-empty dict of keyword overrides."""
    if isinstance(target, Mapping):
        if not target or not all(isinstance(k, str) for k in target):
            raise ValueError(
                f"deployment {name!r}: a keyword-override target must be a non-empty dict of "
                f"argument names, got {redact(target)!r}; e.g. {{'model': 'gpt-4o-eu'}}")
        return dict(target)
    if not is_async_callable(target):
        raise TypeError(
            f"deployment {name!r}: target {redact(target)!r} is neither an async callable (a "
            "client's method) nor a dict of keyword overrides such as {'model': 'gpt-4o-eu'}")
    return target
