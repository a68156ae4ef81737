"""What the integrations need to know about a pipeline's layers (without importing layer modules)."""

from __future__ import annotations

from .._core.layer import Retrying
from .._pipeline.pipeline import Pipeline

__all__ = ["has_retry"]


def has_retry(pipeline: Pipeline) -> bool:
    """True when some layer retries (:class:`~llmguard._core.layer.Retrying`, as ``Retry``
    is), so the client library must not retry too."""
    return any(isinstance(layer, Retrying) for layer in pipeline.layers)
