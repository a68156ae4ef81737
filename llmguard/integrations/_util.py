"""What the integrations need to know about a pipeline's layers (without importing layer modules)."""

from __future__ import annotations

import sys
from typing import Any

from .._pipeline.pipeline import Pipeline

__all__ = ["has_retry", "header_observers"]


def has_retry(pipeline: Pipeline) -> bool:
    """True when some layer is a ``Retry``, so the client library must not retry too."""
    module = sys.modules.get("llmguard._resilience.retry")  # a Retry instance exists only once it is loaded
    retry = getattr(module, "Retry", None)
    return retry is not None and any(isinstance(layer, retry) for layer in pipeline.layers)


def header_observers(pipeline: Pipeline) -> tuple[Any, ...]:
    """The layers that learn from provider rate-limit headers (``RateLimit.observe_headers``)."""
    return tuple(layer for layer in pipeline.layers if callable(getattr(layer, "observe_headers", None)))
