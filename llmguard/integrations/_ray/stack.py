"""The recommended stack (``llmguard run``'s layers) built per actor, shared through Redis."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import llmguard as lg

from ..._pipeline.stack import StackSpec, build_stack
from ..._upstream.deployments import DeploymentConfig, router_of

__all__ = ["Stack"]


class Stack:
    """A picklable pipeline factory for :class:`GuardedRows`: the layers of ``llmguard run``
    in the recommended order (cache, fallback, retry, timeout, rate limit, concurrency), built
    by the one recipe the CLI and the gateway use too.

    ``Stack(rpm=500, retries=2, fallback_models=("gpt-4o-mini",))`` takes the options of the
    stack (see ``StackSpec``: ``rpm``, ``tpm``, ``burst``, ``margin``, ``refill``, ``charge``,
    ``concurrency``, ``adaptive``, ``retries``, ``timeout``, ``fallbacks``, ``cache_ttl``,
    ``circuit_breaker``, ``max_wait``), or a ready spec as ``Stack(spec)``.

    Called with a :class:`~llmguard.backends.redis.RedisBackend`, the cache, the quotas and
    the concurrency limit live in Redis, shared by every actor (``concurrency`` is then the
    total over all actors). Called with None (no Redis), each actor gets ``1/share`` of each
    quota and of the concurrency, so ``share`` actors together stay within them; without Redis
    the cache is per actor. ``adaptive=True`` puts an adaptive limit in each actor instead.

    ``deployments`` (``llmguard run --config``'s, or its repeated ``--api-base``) put a
    :class:`llmguard.Router` in the rate limit's place, choosing by ``strategy``: each
    attempt names its deployment for ``llmguard run``'s provider (``ray_send``) to send it
    there. On Redis every actor routes against the same per-deployment quotas (and
    ``concurrency``); without it each actor gets ``1/share`` of each deployment's.
    """

    __slots__ = ("deployments", "name", "share", "spec", "strategy")

    def __init__(self, spec: StackSpec | None = None, *, share: int = 1,
                 name: str = "llmguard-run", deployments: tuple[DeploymentConfig, ...] = (),
                 strategy: str = "headroom", **options: Any) -> None:
        if "fallback_models" in options:  # the name this option had before StackSpec
            options["fallbacks"] = tuple(options.pop("fallback_models"))
        if spec is not None and options:
            raise TypeError("pass a StackSpec or the options, not both")
        #: The layers' options.
        self.spec = spec if spec is not None else StackSpec(**options)
        if isinstance(share, bool) or not isinstance(share, int) or share < 1:
            raise ValueError(f"share must be an integer >= 1, got {share!r}")
        #: Actors sharing the quotas when there is no Redis (each takes 1/share).
        self.share = share
        self.name = name
        #: The deployments a Router routes over (none: the spec's rate limit), and how.
        self.deployments, self.strategy = tuple(deployments), strategy
        quotas = [(self.spec.rpm, self.spec.tpm),
                  *((d.rpm, d.tpm, d.input_tpm, d.output_tpm) for d in self.deployments)]
        for some in quotas:
            if share > 1 and any(q is not None and q < share for q in some):
                raise ValueError(f"quotas {some} split over share={share} actors leave some "
                                 "actor no quota; pass redis_url to share them")

    def __call__(self, backend: Any) -> lg.Pipeline:
        """The pipeline of one actor (``backend``: a RedisBackend, or None)."""
        cache: dict[str, Any] = {}
        limiter = None
        if backend is not None:
            from llmguard.backends.redis import RedisConcurrencyLimiter, RedisStore

            if self.spec.cache_ttl is not None:  # one namespace: every actor reads any other's
                cache = {"namespace": self.name,
                         "store": RedisStore(backend, namespace=f"{self.name}-cache")}
            if not self.spec.adaptive:
                limiter = RedisConcurrencyLimiter(backend, self.spec.concurrency,
                                                  name=f"{self.name}-concurrency")
        share = 1 if backend is not None else self.share
        return build_stack(self.spec, name=self.name, cache=cache, backend=backend,
                           limiter=limiter, share=share, rate_limit=self._router(backend, share))

    def _router(self, backend: Any, share: int) -> lg.Router | None:
        """The Router over the deployments, each with ``1/share`` of its quotas and slots."""
        if not self.deployments:
            return None

        def part(n: int | None) -> int | None:
            return None if n is None else max(1, n // share)

        return router_of(tuple(replace(d, rpm=part(d.rpm), tpm=part(d.tpm),
                                       input_tpm=part(d.input_tpm), output_tpm=part(d.output_tpm),
                                       concurrency=part(d.concurrency))
                               for d in self.deployments),
                         self.strategy, self.spec.max_wait, backend)

    def __repr__(self) -> str:
        routed = f", deployments={[d.name for d in self.deployments]!r}" * bool(self.deployments)
        return f"Stack({self.spec!r}, share={self.share}, name={self.name!r}{routed})"
