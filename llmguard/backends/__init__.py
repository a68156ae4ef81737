"""Where layers keep their state: the seams a backend implements and the in-process backends.

* :class:`RateLimitBackend` (RateLimit's windows; :class:`MemoryBackend` in this process,
  ``llmguard.backends.redis.RedisBackend`` shared), described by :class:`Quota`;
* :class:`Limiter` (ConcurrencyLimit's permits; :class:`ConcurrencyLimiter` in this process,
  ``RedisConcurrencyLimiter`` shared);
* :class:`SlotBackend` (a backend that holds a Router deployment's ``concurrency`` slots
  across processes, as :class:`SharedSlots`; ``RedisBackend``);
* :class:`CacheStore` (Cache's entries; :class:`MemoryStore`, ``RedisStore``);
* :class:`CircuitStore` (CircuitBreaker's state);
* :class:`BudgetLedger` (Budget's spend and reservations; :class:`MemoryLedger`, Redis's);
* :class:`TakesNow` and :class:`LocalStore`: what an in-process backend offers for the layers'
  synchronous fast paths.
"""

from .._admission.budget.ledger import BudgetLedger, MemoryLedger
from .._admission.limiter import ConcurrencyLimiter, Limiter
from .._admission.permits import SharedSlots, SlotBackend
from .._admission.ratelimit.backend import MemoryBackend, RateLimitBackend, TakesNow
from .._admission.ratelimit.window import Quota
from .._cache.store import CacheStore, LocalStore, MemoryStore
from .._resilience.circuit_state import CircuitStore

__all__ = ["BudgetLedger", "CacheStore", "CircuitStore", "ConcurrencyLimiter", "Limiter",
           "LocalStore", "MemoryBackend", "MemoryLedger", "MemoryStore", "Quota",
           "RateLimitBackend", "SharedSlots", "SlotBackend", "TakesNow"]
