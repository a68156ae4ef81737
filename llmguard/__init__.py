"""llmguard: composable async concurrency control for LLM calls."""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._core.call import Call
from ._core.classify import Failure, FailureKind, classify
from ._core.errors import (AdmissionError, AdmissionTimeout, BackendUnavailable, BatchInterrupted,
                           BudgetExceeded, CircuitOpenError, FallbackExhausted, FirstChunkTimeout,
                           JobNotFound, LLMGuardError, QueueFull, RequestTooLarge,
                           StreamIdleTimeout, StreamTotalTimeout, TimeoutExceeded)
from ._core.events import CallRecord, Event, EventKind, Subscription, recording, subscribe
from ._core.layer import BuildHook, Handler, HeaderObserver, Layer, compose
from ._core.public import NAMESPACES as _NAMESPACES
from ._core.stream import Stream
from ._core.tokens import Usage, estimate_tokens, extract_usage
from ._pipeline.guarded import Guarded
from ._pipeline.pipeline import Pipeline, guard

# The names below load on first use, so `import llmguard` stays light (no asyncio, no layer
# module). This block is their only listing: type checkers read it, and `__getattr__` reads the
# same lines (once, on the first lazy name) to learn which module holds which name.
if _TYPE_CHECKING:
    from ._admission.adaptive import AdaptiveConcurrency
    from ._admission.budget.layer import Budget
    from ._admission.concurrency import ConcurrencyLimit
    from ._admission.ratelimit.layer import RateLimit
    from ._cache.layer import Cache
    from ._observability.metrics import Metrics
    from ._observability.prometheus import MetricsServer, serve_metrics
    from ._pipeline.client import wrap_client
    from ._resilience.budget import RetryBudget
    from ._resilience.circuit import CircuitBreaker
    from ._resilience.fallback import Fallback
    from ._resilience.retry import Retry
    from ._resilience.timeout import Timeout
    from ._routing import Deployment, Router
    from ._runners.batch import Outcome, batch, batch_iter
    from ._runners.jobs import Job, JobManager, JobStatus
    from ._runners.pool import AgentPool

_lazy: dict[str, str] = {}

#: Names that moved to a namespace of their own (algorithms, statistics, backends): the old
#: top-level name still works, with a DeprecationWarning, until the next release.
_MOVED = {name: home for name, home in _NAMESPACES.items()
          if name not in ("BudgetLedger", "BudgetStats", "DeploymentStats", "LayerStats",
                          "LocalStore", "MemoryLedger", "RouterStats", "TakesNow")}  # new names


def _lazy_map() -> dict[str, str]:
    """Name -> module, read from the ``if _TYPE_CHECKING:`` block above (parsed once)."""
    if not _lazy:
        import ast

        with open(__file__, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        block = next(node for node in tree.body if isinstance(node, ast.If)
                     and getattr(node.test, "id", None) == "_TYPE_CHECKING")
        for node in block.body:
            assert isinstance(node, ast.ImportFrom)
            _lazy.update({alias.name: "." * node.level + (node.module or "") for alias in node.names})
    return _lazy


#: Public subpackages, imported on first attribute access (not at ``import llmguard``).
_SUBPACKAGES = frozenset({"algorithms", "backends", "batch_api", "integrations", "stats",
                          "testing"})


def __getattr__(name: str) -> _Any:
    home = _MOVED.get(name)
    if home is not None:  # not cached in globals: every use of the old name warns
        import warnings
        from importlib import import_module

        warnings.warn(f"llmguard.{name} moved to {home}.{name}; the top-level name will be "
                      "removed in the next release", DeprecationWarning, stacklevel=2)
        return getattr(import_module(home), name)
    module = _lazy_map().get(name) if not name.startswith("__") else None
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:  # ``lg.backends.MemoryBackend`` after only ``import llmguard``
        from importlib import import_module

        return import_module(f".{name}", __name__)
    # __version__ is read lazily: importlib.metadata alone costs ~25 ms of import time.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("llmguard")
        except PackageNotFoundError:  # a source tree that was not installed
            return "0.0.0"
    raise AttributeError(f"module 'llmguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AdaptiveConcurrency",
    "AdmissionError",
    "AdmissionTimeout",
    "AgentPool",
    "BackendUnavailable",
    "BatchInterrupted",
    "Budget",
    "BudgetExceeded",
    "BuildHook",
    "Cache",
    "Call",
    "CallRecord",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConcurrencyLimit",
    "Deployment",
    "Event",
    "EventKind",
    "Failure",
    "FailureKind",
    "Fallback",
    "FallbackExhausted",
    "FirstChunkTimeout",
    "Guarded",
    "Handler",
    "HeaderObserver",
    "Job",
    "JobManager",
    "JobNotFound",
    "JobStatus",
    "LLMGuardError",
    "Layer",
    "Metrics",
    "MetricsServer",
    "Outcome",
    "Pipeline",
    "QueueFull",
    "RateLimit",
    "RequestTooLarge",
    "Retry",
    "RetryBudget",
    "Router",
    "Stream",
    "StreamIdleTimeout",
    "StreamTotalTimeout",
    "Subscription",
    "Timeout",
    "TimeoutExceeded",
    "Usage",
    "batch",
    "batch_iter",
    "classify",
    "compose",
    "estimate_tokens",
    "extract_usage",
    "guard",
    "recording",
    "serve_metrics",
    "subscribe",
    "wrap_client",
]
