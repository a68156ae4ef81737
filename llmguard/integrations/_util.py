"""What the integrations need to know about a pipeline's layers (by duck typing, no imports)."""

from __future__ import annotations

from typing import Any

from .._pipeline import Pipeline

__all__ = ["has_retry", "header_observers"]


def has_retry(pipeline: Pipeline) -> bool:
    """True when some layer retries (a ``Retry``), so the client library must not retry too."""
    return any(type(layer).__name__ == "Retry" for layer in pipeline.layers)


def header_observers(pipeline: Pipeline) -> tuple[Any, ...]:
    """The layers that learn from provider rate-limit headers (``RateLimit.observe_headers``)."""
    return tuple(layer for layer in pipeline.layers if callable(getattr(layer, "observe_headers", None)))
