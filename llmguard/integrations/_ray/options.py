"""Checking the options of :class:`GuardedRows` (on the driver, before any actor starts)."""

from __future__ import annotations

import inspect
from typing import Any

import llmguard as lg
from llmguard._core.redact import redact_url

__all__ = ["check_options", "redact"]


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        auth, _, host = rest.rpartition("@")
        user = auth.split(":", 1)[0]
        return f"{scheme}://{user + ':' if user else ':'}***@{host}"
    return url


def _is_async_callable(obj: Any) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None))


def check_options(*, pipeline: Any, send: Any, make_send: Any, redis_url: Any, prefix: Any,
                  on_error: Any, remember: Any, remember_ttl: Any, row_concurrency: Any,
                  model: Any, default_model: Any, text_column: Any, priority_field: Any,
                  name: Any, redis_timeout: Any = 2.0) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first bad option (cheap, no I/O)."""
    if isinstance(pipeline, lg.Pipeline):
        raise TypeError("pipeline must be a function (backend) -> Pipeline that each actor calls "
                        "once, not a Pipeline: layers hold per-process state (queues, locks); "
                        "write def make_pipeline(backend): return lg.Pipeline()...")
    if pipeline is not None and not callable(pipeline):
        raise TypeError(f"pipeline must be a function (backend) -> Pipeline, got {pipeline!r}")
    if (send is None) == (make_send is None):
        raise TypeError("pass exactly one of send= (an async callable send(**request)) or "
                        "make_send= (a zero-argument factory each actor calls once to get it)")
    if send is not None and not _is_async_callable(send):
        raise TypeError(f"send must be an async callable send(**request), got {send!r}; a "
                        "factory that builds a client goes in make_send=")
    if make_send is not None and not callable(make_send):
        raise TypeError(f"make_send must be a zero-argument callable, got {make_send!r}")
    if redis_url is not None and (not isinstance(redis_url, str) or "://" not in redis_url):
        shown = redact_url(redis_url) if isinstance(redis_url, str) else redis_url
        raise ValueError(f"redis_url must be a Redis URL such as 'redis://127.0.0.1:6379/0', "
                         f"got {shown!r}")  # (its password hidden: its scheme forgotten)
    for label, value in (("prefix", prefix), ("name", name)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{label} must be a non-empty string, got {value!r}")
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' (an error becomes the row's record) or "
                         f"'raise' (the Ray task fails), got {on_error!r}")
    if remember is not None:
        if not isinstance(remember, str) or not remember:
            raise TypeError(f"remember must be a non-empty job name (str) or None, got "
                            f"{remember!r}")
        if redis_url is None:
            raise ValueError("remember= keeps answered rows in Redis: pass redis_url= too")
    if isinstance(remember_ttl, bool) or not isinstance(remember_ttl, (int, float)) \
            or not remember_ttl > 0:
        raise ValueError(f"remember_ttl must be a number of seconds > 0, got {remember_ttl!r}")
    if isinstance(redis_timeout, bool) or not isinstance(redis_timeout, (int, float)) \
            or not redis_timeout > 0:
        raise ValueError(f"redis_timeout must be a number of seconds > 0, got {redis_timeout!r}")
    if isinstance(row_concurrency, bool) or not isinstance(row_concurrency, int) \
            or row_concurrency < 1:
        raise ValueError(f"row_concurrency must be an integer >= 1, got {row_concurrency!r}")
    for label, value in (("model", model), ("default_model", default_model),
                         ("text_column", text_column), ("priority_field", priority_field)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"{label} must be a non-empty string or None, got {value!r}")
