"""The frozen snapshots layers return from ``statistics()`` (``Guarded.stats()`` collects them).

Each is a frozen dataclass deriving from :class:`LayerStats`, with the layer's counters and,
where it holds state, its gauges; ``LayerStats.GAUGES`` names the fields
:class:`llmguard.Metrics` exports from any layer's statistics.
"""

from ._admission.adaptive import AdaptiveStats
from ._admission.budget.stats import BudgetStats
from ._admission.limiter import ConcurrencyStats
from ._admission.ratelimit.layer import RateLimitStats
from ._cache.layer import CacheStatistics
from ._core.stats import LayerStats
from ._observability.histogram import MetricsStats
from ._resilience.circuit import CircuitStats
from ._resilience.fallback import FallbackStats
from ._resilience.retry import RetryStats
from ._resilience.timeout import TimeoutStats
from ._routing.stats import DeploymentStats, RouterStats
from ._runners.member import MemberStats, PoolStats

__all__ = ["AdaptiveStats", "BudgetStats", "CacheStatistics", "CircuitStats", "ConcurrencyStats",
           "DeploymentStats", "FallbackStats", "LayerStats", "MemberStats", "MetricsStats",
           "PoolStats", "RateLimitStats", "RetryStats", "RouterStats", "TimeoutStats"]
