"""What the instruments, the registry and the spans read of a Metrics layer.

``metrics.py`` imports those modules, so they type against this protocol rather than the class:
the dependency points one way, and the seam is the public surface listed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .histogram import MetricsSnapshot

__all__ = ["MetricsView"]


class MetricsView(Protocol):
    """A Metrics layer as its helpers see it."""

    name: str | None
    model: str | None
    operation: str

    @property
    def neighbours(self) -> Iterable[Any]: ...

    @property
    def tracer(self) -> Any: ...

    def snapshot(self) -> MetricsSnapshot: ...
