"""One token estimate per gateway request.

The tenant's quota (``TenantGate``, outermost) and the model's ``RateLimit`` both reserve the
request's estimated tokens. The gate makes the estimate and leaves it in this task's context;
the model's RateLimit (given :func:`estimate` as its ``tokens``) takes it when it is asked about
the same request, the same objects, not a copy that could have changed: the request's body is
parsed once and its messages are never edited. A fallback model's call has the same messages,
so it takes the estimate too (the estimate does not depend on the model); anything else (a
call without a tenant quota, the jobs runner's lines) is estimated as usual.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import llmguard as lg

__all__ = ["ESTIMATE", "basis", "estimate"]

#: What this task's request was estimated from (:func:`basis`) and the estimate, or None.
ESTIMATE: ContextVar[tuple[tuple[Any, ...], int] | None] = ContextVar(
    "llmguard_serve_estimate", default=None)


def basis(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """What ``estimate_tokens`` reads of a request: its text and its output reservation."""
    return (kwargs.get("messages"), kwargs.get("input"), kwargs.get("prompt"),
            kwargs.get("max_tokens"), kwargs.get("max_completion_tokens"),
            kwargs.get("max_output_tokens"))


def estimate(*args: Any, **kwargs: Any) -> int:
    """``llmguard.estimate_tokens``, or the estimate the tenant's gate made of this very request
    (every part :func:`basis` reads is the same object)."""
    made = ESTIMATE.get()
    if made is not None and not args:
        (messages, text, prompt, most, most_completion, most_output), tokens = made
        get = kwargs.get  # written out (no generator): this runs for every attempt
        if (get("messages") is messages and get("input") is text and get("prompt") is prompt
                and get("max_tokens") is most and get("max_completion_tokens") is most_completion
                and get("max_output_tokens") is most_output):
            return tokens
    return lg.estimate_tokens(*args, **kwargs)
