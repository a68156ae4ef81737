"""llmguard: composable async concurrency control for LLM calls."""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._classify import Failure, FailureKind, classify
from ._core import Call, Handler, Layer, compose
from ._errors import (
    AdmissionError,
    AdmissionTimeout,
    BackendUnavailable,
    BatchInterrupted,
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
from ._pipeline import Guarded, Pipeline, guard, wrap_client
from ._stream import Stream
from ._tokens import Usage, estimate_tokens, extract_usage

if _TYPE_CHECKING:
    from ._adaptive import (
        AIMD,
        AdaptiveConcurrency,
        AdaptiveStats,
        Gradient,
        Gradient2,
        LimitAlgorithm,
        Vegas,
    )
    from ._batch import Outcome, batch, batch_iter
    from ._cache import Cache, CacheStatistics
    from ._cachestore import CacheStore, MemoryStore
    from ._circuit import CircuitBreaker, CircuitStats
    from ._concurrency import ConcurrencyLimit, ConcurrencyLimiter, ConcurrencyStats
    from ._fallback import Fallback, FallbackStats
    from ._jobs import Job, JobManager, JobStatus
    from ._latency import MetricsStats
    from ._metrics import Metrics
    from ._pool import AgentPool, MemberStats, PoolStats
    from ._prometheus import MetricsServer, serve_metrics
    from ._ratebackend import MemoryBackend, RateLimitBackend
    from ._ratelimit import RateLimit, RateLimitStats
    from ._window import Quota
    from ._retry import Retry, RetryBudget, RetryStats
    from ._timeout import Timeout, TimeoutStats

#: Public names loaded on first use: `import llmguard` stays light (no asyncio, no layer
#: module) until a layer is used; each module loads once, on its first name.
_LAZY = {
    "AIMD": "._adaptive",
    "AdaptiveConcurrency": "._adaptive",
    "AdaptiveStats": "._adaptive",
    "AgentPool": "._pool",
    "Cache": "._cache",
    "CacheStatistics": "._cache",
    "CacheStore": "._cachestore",
    "CircuitBreaker": "._circuit",
    "CircuitStats": "._circuit",
    "ConcurrencyLimit": "._concurrency",
    "ConcurrencyLimiter": "._concurrency",
    "ConcurrencyStats": "._concurrency",
    "Fallback": "._fallback",
    "FallbackStats": "._fallback",
    "Gradient": "._adaptive",
    "Gradient2": "._adaptive",
    "Job": "._jobs",
    "JobManager": "._jobs",
    "JobStatus": "._jobs",
    "LimitAlgorithm": "._adaptive",
    "MemoryBackend": "._ratebackend",
    "MemoryStore": "._cachestore",
    "Metrics": "._metrics",
    "MetricsServer": "._prometheus",
    "MemberStats": "._pool",
    "MetricsStats": "._latency",
    "Outcome": "._batch",
    "PoolStats": "._pool",
    "Quota": "._window",
    "RateLimit": "._ratelimit",
    "RateLimitBackend": "._ratebackend",
    "RateLimitStats": "._ratelimit",
    "Retry": "._retry",
    "RetryBudget": "._retry",
    "RetryStats": "._retry",
    "Timeout": "._timeout",
    "TimeoutStats": "._timeout",
    "Vegas": "._adaptive",
    "batch": "._batch",
    "batch_iter": "._batch",
    "serve_metrics": "._prometheus",
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
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


__all__ = [
    "AIMD",
    "AdaptiveConcurrency",
    "AdaptiveStats",
    "AdmissionError",
    "AdmissionTimeout",
    "AgentPool",
    "BackendUnavailable",
    "BatchInterrupted",
    "Cache",
    "CacheStatistics",
    "CacheStore",
    "Call",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitStats",
    "ConcurrencyLimit",
    "ConcurrencyLimiter",
    "ConcurrencyStats",
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
    "MemberStats",
    "MemoryBackend",
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
    "serve_metrics",
    "wrap_client",
]
