"""The gateway's engine: one pipeline per model, one request's path through tenant and model layers.

A chat request runs ``TenantGate`` (the tenant's quota, refused at once, then its concurrency
cap) and then the model's pipeline in the README's order: Metrics, Cache, Fallback (to the other
models' own pipelines, so a fallback model's quota protects it too), Retry, CircuitBreaker,
Timeout, RateLimit, ConcurrencyLimit | AdaptiveConcurrency. The model's concurrency limiter
serves waiting calls by priority (``call.priority``) and round-robin across tenants
(``call.partition`` is the tenant's name).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

import llmguard as lg

from .._pipeline.stack import build_stack
from .._upstream.protocol import Upstream
from .._upstream.select import make_upstream, terminal
from .config import ModelConfig, ServeConfig
from .tenants import Tenant, TenantGate, Tenants
from .usage import UsageBook

__all__ = ["Gateway", "ShuttingDown"]


class ShuttingDown(Exception):
    """The grace period after SIGTERM ran out before this request finished."""


def upstream_of(cfg: ModelConfig) -> Upstream:
    """Where a configured model's requests go (its key read from ``api_key_env``)."""
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.provider == "fake":
        return make_upstream("fake", name=cfg.name, latency=cfg.latency,
                             seconds_per_token=cfg.seconds_per_token,
                             fail_status=cfg.fail_status, model=cfg.model)
    return make_upstream(cfg.provider, name=cfg.name, base_url=cfg.base_url, api_key=key or None)


class Model:
    """One configured model at run time: its upstream and its handlers."""

    __slots__ = ("config", "upstream", "name", "target", "chat", "embed", "guarded")

    def __init__(self, config: ModelConfig, upstream: Upstream) -> None:
        self.config, self.upstream, self.name = config, upstream, config.name
        #: What the upstream is asked for.
        self.target = config.model or config.name
        self.chat: Any = None  # handler: TenantGate + the model's layers + the upstream
        self.embed: Any = None
        self.guarded: Any = None  # the model's layers around its upstream (a fallback target)

    def terminal(self, *, embed: bool = False) -> Any:
        """The innermost handler: to the upstream, as this model (a fallback arrives named as
        the primary)."""
        send = terminal(self.upstream, embed=embed)
        target = self.target

        def as_this_model(call: lg.Call) -> Any:
            if call.kwargs.get("model") != target:
                call.kwargs = {**call.kwargs, "model": target}  # the caller's dict is untouched
            return send(call)

        return as_this_model

    async def send(self, **request: Any) -> Any:
        """One request to the upstream as this model, without layers: the function the model's
        pipelines guard (what its cache keys name)."""
        return await self.terminal()(lg.Call(self.send, (), request))


class Gateway:
    """Everything one gateway process holds: models, tenants, usage and the drain state."""

    def __init__(self, config: ServeConfig, *, redis_url: str | None = None,
                 redis_prefix: str = "llmguard-serve", meter_provider: Any = None,
                 tracer_provider: Any = None) -> None:
        self.config = config
        #: Where shared state lives (None: this process only); the jobs store uses them too.
        self.redis_url, self.redis_prefix = redis_url, redis_prefix
        self.backend: Any = None
        limiter_factory = None
        if redis_url is not None:
            from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter

            backend = self.backend = RedisBackend(redis_url, prefix=redis_prefix)

            def limiter_factory(name: str, n: int) -> Any:
                return RedisConcurrencyLimiter(backend, n, name=f"tenant:{name}", max_wait=60.0)

        self.tenants = Tenants(config.tenants, backend=self.backend,
                               limiter_factory=limiter_factory)
        #: Where the models' Metrics layers export (None: the global meter provider; no spans).
        self.meter_provider, self.tracer_provider = meter_provider, tracer_provider
        meter = None
        if meter_provider is not None:
            meter = meter_provider.get_meter("llmguard.serve")
        self.usage = UsageBook(meter, redis_url, redis_prefix)
        self.models: dict[str, Model] = {}
        gate = TenantGate(self.tenants)
        for name in self._build_order():
            self._build(self.config.models[name], gate)
        #: Loop time after which in-flight work is ended cleanly (set by ``drain``), or None.
        self.stop_at: float | None = None
        self.draining = False
        self._scopes: set[asyncio.Timeout] = set()

    def _build_order(self) -> list[str]:
        """Models in an order where every fallback target is built before its users."""
        order: list[str] = []

        def visit(name: str) -> None:
            for fb in self.config.models[name].stack.fallbacks:
                visit(fb)
            if name not in order:
                order.append(name)
        for name in self.config.models:
            visit(name)
        return order

    def _build(self, cfg: ModelConfig, gate: TenantGate) -> None:
        """The model's handlers, through ``Pipeline.build`` like every pipeline: the stack recipe
        (Metrics, Cache per tenant, Fallback to the other models' own pipelines, Retry,
        CircuitBreaker, Timeout, RateLimit, concurrency), the tenant gate outermost."""
        model = self.models[cfg.name] = Model(cfg, upstream_of(cfg))
        name = f"serve:{cfg.name}"
        cache: dict[str, Any] = {"per_partition": True}  # tenants never see each other's answers
        limiter = None
        if self.backend is not None:
            from llmguard.backends.redis import RedisConcurrencyLimiter, RedisStore

            cache["store"] = RedisStore(self.backend, namespace=name)
            limiter = RedisConcurrencyLimiter(self.backend, cfg.stack.concurrency,
                                              name=f"model:{cfg.name}",
                                              max_wait=cfg.stack.max_wait)
        stack = build_stack(cfg.stack, name=name, backend=self.backend, limiter=limiter,
                            metrics={"meter_provider": self.meter_provider,
                                     "tracer_provider": self.tracer_provider,
                                     "provider": cfg.provider},
                            cache=cache, fallback=lambda fb: self.models[fb].guarded)
        model.guarded = stack.wrap(model.send, terminal=model.terminal())
        model.chat = lg.Pipeline(gate, *stack.layers, name=name).build(model.terminal())
        # Embeddings share the model's Metrics, quota and slots (the same layer instances), with
        # their own retry and timeout; no cache or fallback (those are chat-shaped).
        shared = [layer for layer in stack.layers
                  if isinstance(layer, (lg.Metrics, lg.RateLimit, lg.ConcurrencyLimit,
                                        lg.AdaptiveConcurrency))]
        own = build_stack(replace(cfg.stack, fallbacks=(), cache_ttl=None,
                                  circuit_breaker=False, rpm=None, tpm=None))
        own_layers = [layer for layer in own.layers if isinstance(layer, (lg.Retry, lg.Timeout))]
        metrics, limits = shared[:1], shared[1:]
        model.embed = lg.Pipeline(gate, *metrics, *own_layers, *limits, name=name).build(
            model.terminal(embed=True))

    def model_for(self, tenant: Tenant, name: Any) -> Model | None:
        """The model ``name`` if it exists and the tenant may use it (else None: a 404 either
        way, so a tenant cannot tell another tenant's model from a missing one)."""
        model = self.models.get(name) if isinstance(name, str) else None
        return model if model is not None and tenant.may_use(name) else None

    async def call(self, model: Model, tenant: Tenant, request: dict[str, Any], priority: int,
                   *, embed: bool = False) -> Any:
        """Run one request through the tenant's and the model's layers; the result is a dict
        or, for a stream, an ``lg.Stream`` whose first chunk has arrived."""
        return await self.run(model, self.start(model, tenant, request, priority, embed=embed))

    def start(self, model: Model, tenant: Tenant, request: dict[str, Any], priority: int,
              *, embed: bool = False) -> lg.Call:
        """The call of one request (its ``record`` tells what happened to it)."""
        request["model"] = model.target
        call = lg.Call(model.send, (), request, f"serve:{model.name}")
        call.priority = priority
        call.partition = tenant.name  # the tenant: its cache entries, its turn at the limiter
        if embed:
            call.record.operation = "embeddings"
        return call

    async def run(self, model: Model, call: lg.Call) -> Any:
        """Run a call made by :meth:`start` through its model's handler."""
        embed = call.record.operation == "embeddings"
        return await self.bounded((model.embed if embed else model.chat)(call))

    async def bounded(self, awaitable: Any) -> Any:
        """Await ``awaitable`` but no later than the drain deadline (then :class:`ShuttingDown`).

        One ``asyncio.timeout`` per await, tracked while active, so ``drain`` can pull its
        deadline in: work in flight ends with an answer, never a cut connection."""
        scope = asyncio.timeout_at(self.stop_at)
        self._scopes.add(scope)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired() and self.stop_at is not None:
                raise ShuttingDown("the gateway is shutting down and its grace period for "
                                   "requests in flight ran out; retry on another replica") from None
            raise
        finally:
            self._scopes.discard(scope)

    def drain(self, grace: float | None = None) -> None:
        """Stop taking requests (503, /readyz fails) and end what is in flight within ``grace``
        seconds (default: the config's). Called from the server's SIGTERM handling."""
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        self.stop_at = loop.time() + (self.config.grace if grace is None else grace)
        for scope in list(self._scopes):
            if scope.when() is None or scope.when() > self.stop_at:
                scope.reschedule(self.stop_at)

    def secrets(self) -> list[str]:
        """Upstream keys this process holds (never to be printed)."""
        found: list[str] = []
        for model in self.models.values():
            found += model.upstream.secrets()
        return found

    async def aclose(self) -> None:
        await self.usage.aclose()
        for model in self.models.values():
            await model.upstream.aclose()
        if self.backend is not None:
            await self.backend.aclose()
