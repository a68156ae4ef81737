"""The frozen snapshots layers return from ``statistics()`` (``Guarded.stats()`` collects them).

Each is a dataclass with the layer's counters and, where it holds state, its gauges; the names
:class:`llmguard.Metrics` exports from any layer's statistics are ``in_flight``, ``limit``,
``waiting``, ``requests_available``, ``tokens_available``, ``rejected``, ``timed_out``,
``retries``, ``fallbacks``, ``hits``, ``misses``, ``coalesced`` and ``state``.
"""

from ._admission.adaptive import AdaptiveStats
from ._admission.limiter import ConcurrencyStats
from ._admission.ratelimit.layer import RateLimitStats
from ._cache.layer import CacheStatistics
from ._observability.histogram import MetricsStats
from ._resilience.circuit import CircuitStats
from ._resilience.fallback import FallbackStats
from ._resilience.retry import RetryStats
from ._resilience.timeout import TimeoutStats
from ._runners.member import MemberStats, PoolStats

__all__ = ["AdaptiveStats", "CacheStatistics", "CircuitStats", "ConcurrencyStats",
           "FallbackStats", "MemberStats", "MetricsStats", "PoolStats", "RateLimitStats",
           "RetryStats", "TimeoutStats"]
