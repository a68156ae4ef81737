"""llmguard: composable async concurrency control for LLM calls."""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._core.call import Call, Handler, Layer, compose
from ._core.classify import Failure, FailureKind, classify
from ._core.errors import (
    AdmissionError,
    AdmissionTimeout,
    BackendUnavailable,
    BatchInterrupted,
    BudgetExceeded,
    CircuitOpenError,
    FallbackExhausted,
    FirstChunkTimeout,
    JobNotFound,
    LLMGuardError,
    QueueFull,
    RequestTooLarge,
    StreamIdleTimeout,
    StreamTotalTimeout,
    TimeoutExceeded,
)
from ._core.events import CallRecord, Event, EventKind, Subscription, recording, subscribe
from ._core.stream import Stream
from ._core.tokens import Usage, estimate_tokens, extract_usage
from ._pipeline.guarded import Guarded
from ._pipeline.pipeline import Pipeline, guard

# The names below load on first use, so `import llmguard` stays light (no asyncio, no layer
# module). This block is their only listing: type checkers read it, and `__getattr__` reads the
# same lines (once, on the first lazy name) to learn which module holds which name.
if _TYPE_CHECKING:
    from ._admission.adaptive import AdaptiveConcurrency, AdaptiveStats
    from ._admission.algorithms import AIMD, Gradient, Gradient2, LimitAlgorithm, Vegas
    from ._admission.budget.layer import Budget
    from ._admission.budget.ledger import BudgetLedger, MemoryLedger
    from ._admission.budget.stats import BudgetStats
    from ._admission.concurrency import ConcurrencyLimit
    from ._admission.limiter import ConcurrencyLimiter, ConcurrencyStats, Limiter
    from ._admission.ratelimit.backend import MemoryBackend, RateLimitBackend
    from ._admission.ratelimit.layer import RateLimit, RateLimitStats
    from ._admission.ratelimit.window import Quota
    from ._cache.layer import Cache, CacheStatistics
    from ._cache.store import CacheStore, MemoryStore
    from ._observability.histogram import MetricsStats
    from ._observability.metrics import Metrics
    from ._observability.prometheus import MetricsServer, serve_metrics
    from ._pipeline.client import wrap_client
    from ._resilience.circuit import CircuitBreaker, CircuitStats
    from ._resilience.circuit_state import CircuitStore
    from ._resilience.fallback import Fallback, FallbackStats
    from ._resilience.budget import RetryBudget
    from ._resilience.retry import Retry, RetryStats
    from ._resilience.timeout import Timeout, TimeoutStats
    from ._runners.batch import Outcome, batch, batch_iter
    from ._runners.jobs import Job, JobManager, JobStatus
    from ._runners.member import MemberStats, PoolStats
    from ._runners.pool import AgentPool

_lazy: dict[str, str] = {}


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


def __getattr__(name: str) -> _Any:
    module = _lazy_map().get(name) if not name.startswith("__") else None
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value
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
    "AIMD",
    "AdaptiveConcurrency",
    "AdaptiveStats",
    "AdmissionError",
    "AdmissionTimeout",
    "AgentPool",
    "BackendUnavailable",
    "BatchInterrupted",
    "Budget",
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetStats",
    "Cache",
    "CacheStatistics",
    "CacheStore",
    "Call",
    "CallRecord",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitStats",
    "CircuitStore",
    "ConcurrencyLimit",
    "ConcurrencyLimiter",
    "ConcurrencyStats",
    "Event",
    "EventKind",
    "Failure",
    "FailureKind",
    "Fallback",
    "FallbackExhausted",
    "FallbackStats",
    "FirstChunkTimeout",
    "Gradient",
    "Gradient2",
    "Guarded",
    "Handler",
    "Job",
    "JobManager",
    "JobNotFound",
    "JobStatus",
    "LLMGuardError",
    "Layer",
    "LimitAlgorithm",
    "Limiter",
    "MemberStats",
    "MemoryBackend",
    "MemoryLedger",
    "MemoryStore",
    "Metrics",
    "MetricsServer",
    "MetricsStats",
    "Outcome",
    "Pipeline",
    "PoolStats",
    "QueueFull",
    "Quota",
    "RateLimit",
    "RateLimitBackend",
    "RateLimitStats",
    "RequestTooLarge",
    "Retry",
    "RetryBudget",
    "RetryStats",
    "Stream",
    "StreamIdleTimeout",
    "StreamTotalTimeout",
    "Subscription",
    "Timeout",
    "TimeoutExceeded",
    "TimeoutStats",
    "Usage",
    "Vegas",
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
