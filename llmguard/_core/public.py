"""Public names show the namespace users import them from, not the private module they live in."""

from typing import TypeVar

__all__ = ["NAMESPACES", "public"]

T = TypeVar("T")

#: Public names that live in a namespace of their own rather than at the top of ``llmguard``:
#: limit algorithms, statistics classes, and the seams and in-memory backends.
NAMESPACES: dict[str, str] = {
    **dict.fromkeys(("AIMD", "Gradient", "Gradient2", "LimitAlgorithm", "Vegas"),
                    "llmguard.algorithms"),
    **dict.fromkeys(("AdaptiveStats", "BudgetStats", "CacheStatistics", "CircuitStats", "ConcurrencyStats",
                     "DeploymentStats", "FallbackStats", "LayerStats", "MemberStats",
                     "MetricsStats", "PoolStats", "RateLimitStats", "RetryStats", "RouterStats",
                     "TimeoutStats"), "llmguard.stats"),
    **dict.fromkeys(("BudgetLedger", "CacheStore", "CircuitStore", "ConcurrencyLimiter", "Limiter",
                     "LocalStore", "MemoryBackend", "MemoryLedger", "MemoryStore", "Quota", "RateLimitBackend",
                     "SharedSlots", "SlotBackend", "TakesNow"), "llmguard.backends"),
}


def public(cls: T) -> T:
    """Class decorator: ``repr``, tracebacks, ``error.type`` and pickles say ``llmguard.Name``
    (or ``llmguard.stats.Name`` and so on, for the names of :data:`NAMESPACES`).

    Pickling still works: the name resolves through the package's lazy namespace.
    """
    cls.__module__ = NAMESPACES.get(cls.__name__, "llmguard")  # type: ignore[attr-defined]
    return cls
