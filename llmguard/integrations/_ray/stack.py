"""The recommended stack (``llmguard run``'s layers) built per actor, shared through Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llmguard as lg

from ..._runners.layers import run_layers

__all__ = ["Stack"]


@dataclass(frozen=True, slots=True)
class Stack:
    """A picklable pipeline factory for :class:`GuardedRows`: the layers of ``llmguard run``
    in the recommended order (cache, fallback, retry, timeout, rate limit, concurrency), built
    by the one function the CLI uses too.

    Called with a :class:`~llmguard.backends.redis.RedisBackend`, the cache, the quotas and
    the concurrency limit live in Redis, shared by every actor (``concurrency`` is then the
    total over all actors). Called with None (no Redis), each actor gets ``1/share`` of each
    quota and of the concurrency, so ``share`` actors together stay within them; without Redis
    the cache is per actor. ``adaptive=True`` puts an adaptive limit in each actor instead.
    """

    rpm: int | None = None
    tpm: int | None = None
    burst: float | None = None
    margin: float = 0.5
    #: How the provider refills its quota: ``"window"`` or ``"continuous"`` (RateLimit's refill).
    refill: str = "window"
    concurrency: int = 16
    adaptive: bool = False
    retries: int = 3
    timeout: float | None = 60.0
    fallback_models: tuple[str, ...] = ()
    cache_ttl: float | None = None
    #: "reserved" keeps each token reservation as made (OpenAI charges max_tokens at admission).
    charge: str = "reserved"
    #: Actors sharing the quotas when there is no Redis (each takes 1/share).
    share: int = 1
    name: str = "llmguard-run"

    def __post_init__(self) -> None:
        for label in ("rpm", "tpm", "concurrency", "retries", "share"):
            value = getattr(self, label)
            if value is None and label in ("rpm", "tpm"):
                continue
            low = 0 if label == "retries" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if self.share > 1 and any(
                q is not None and q < self.share for q in (self.rpm, self.tpm)):
            raise ValueError(f"rpm/tpm ({self.rpm}/{self.tpm}) split over share={self.share} "
                             "actors leaves some actor no quota; pass redis_url to share it")

    def __call__(self, backend: Any) -> lg.Pipeline:
        """The pipeline of one actor (``backend``: a RedisBackend, or None)."""
        split = 1 if backend is not None else self.share
        cache = None
        if self.cache_ttl is not None:
            cache = {"ttl": self.cache_ttl}
            if backend is not None:  # one namespace: every actor reads what any other stored
                from llmguard.backends.redis import RedisStore

                cache |= {"namespace": self.name,
                          "store": RedisStore(backend, namespace=f"{self.name}-cache")}
        rate_limit = None
        if self.rpm is not None or self.tpm is not None:
            rate_limit = lg.RateLimit(rpm=None if self.rpm is None else self.rpm // split,
                                      tpm=None if self.tpm is None else self.tpm // split,
                                      burst=self.burst, margin=self.margin, refill=self.refill,
                                      charge=self.charge,
                                      backend=backend)
        concurrency: Any = max(1, self.concurrency // split)
        if backend is not None and not self.adaptive:
            from llmguard.backends.redis import RedisConcurrencyLimiter

            concurrency = RedisConcurrencyLimiter(backend, self.concurrency,
                                                  name=f"{self.name}-concurrency")
        return run_layers(name=self.name, cache=cache, fallback_models=self.fallback_models,
                          retries=self.retries, timeout=self.timeout, rate_limit=rate_limit,
                          concurrency=concurrency, adaptive=self.adaptive)
