"""The layers of ``llmguard run``, in one order for the CLI and for ``--ray``.

Metrics -> Cache -> Fallback -> Retry -> Timeout -> Budget -> rate limit -> concurrency -> provider (the
README's "Layer order"): Retry outside the limiters so a backoff never holds a slot, the
concurrency limit innermost so it bounds requests at the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.call import Layer
from .._pipeline.pipeline import Pipeline

__all__ = ["run_layers"]


def run_layers(*, name: str = "llmguard-run", metrics: bool = False,
               cache: Mapping[str, Any] | None = None, fallback_models: tuple[str, ...] = (),
               retries: int = 0, timeout: float | None = None, budget: Layer | None = None,
               rate_limit: Layer | None = None, concurrency: Any = 16,
               adaptive: bool = False) -> Pipeline:
    """The pipeline of one run from its options.

    ``cache`` holds the Cache layer's options (None: no cache); ``retries`` counts retries
    after the first attempt; ``timeout`` adds a Timeout layer (None: the provider bounds its
    own attempts, as the CLI's does); ``budget`` is the spend cap (``--max-cost``), inside
    Retry so each attempt reserves, outside the limiters; ``rate_limit`` is the quota layer (given, learned or
    shared, None: no quota); ``concurrency`` is a limit or a limiter (a Redis one), ignored
    with ``adaptive``.
    """
    p = Pipeline(name=name)
    if metrics:
        p = p.metrics()
    if cache is not None:
        p = p.cache(**cache)
    if fallback_models:
        p = p.fallback(*({"model": m} for m in fallback_models))
    if retries:
        p = p.retry(attempts=retries + 1)
    if timeout is not None:
        p = p.timeout(timeout)
    if budget is not None:
        p = p.then(budget)
    if rate_limit is not None:
        p = p.then(rate_limit)
    return p.adaptive_concurrency() if adaptive else p.concurrency_limit(concurrency)
