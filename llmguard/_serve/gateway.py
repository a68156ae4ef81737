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
import hashlib
import json
import os
from contextvars import ContextVar
from typing import Any

import llmguard as lg

from .._upstream.protocol import Upstream
from .._upstream.select import make_upstream

from .budgets import TenantBudget, attach_budgets
from .config import ModelConfig, ServeConfig
from .tenants import Tenant, TenantGate, Tenants
from .usage import UsageBook

__all__ = ["Gateway", "ShuttingDown"]

#: The tenant of the request being served: part of every cache key, so tenants never see each
#: other's cached answers. A context variable because Cache's key sees only the arguments.
_tenant: ContextVar[str] = ContextVar("llmguard_serve_tenant", default="")


class ShuttingDown(Exception):
    """The grace period after SIGTERM ran out before this request finished."""


def _cache_key(**request: Any) -> str:
    body = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{_tenant.get()}\0{body}".encode()).hexdigest()


def upstream_of(cfg: ModelConfig) -> Upstream:
    """Where a configured model's requests go (its key read from ``api_key_env``)."""
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.provider == "fake":
        return make_upstream("fake", name=cfg.name, latency=cfg.latency,
                             seconds_per_token=cfg.seconds_per_token,
                             fail_status=cfg.fail_status, model=cfg.model)
    return make_upstream(cfg.provider, name=cfg.name, base_url=cfg.base_url, api_key=key or None)


class Model:
    """One configured model at run time: its upstream, layers and handlers."""

    __slots__ = ("config", "upstream", "name", "target", "chat", "embed", "guarded", "layers")

    def __init__(self, config: ModelConfig, upstream: Upstream) -> None:
        self.config, self.upstream, self.name = config, upstream, config.name
        #: What the upstream is asked for.
        self.target = config.model or config.name
        self.chat: Any = None  # handler: TenantGate + the model's layers
        self.embed: Any = None
        self.guarded: Any = None  # the model's pipeline around its upstream (a fallback target)
        self.layers: tuple[Any, ...] = ()

    async def send(self, **request: Any) -> Any:
        """The terminal call: to the upstream, as this model (a fallback arrives named as the
        primary)."""
        request["model"] = self.target
        if request.get("stream"):
            return self.upstream.stream(request)
        return await self.upstream.chat(request)

    async def send_embed(self, **request: Any) -> Any:
        request["model"] = self.target
        return await self.upstream.embed(request)


class Gateway:
    """Everything one gateway process holds: models, tenants, usage and the drain state."""

    def __init__(self, config: ServeConfig, *, redis_url: str | None = None,
                 redis_prefix: str = "llmguard-serve", meter_provider: Any = None) -> None:
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
        attach_budgets(self.tenants, config.models, self.backend)
        self._budgeted = any(t.budget is not None for t in self.tenants.by_name.values())
        self.meter_provider = meter_provider
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
            for fb in self.config.models[name].fallbacks:
                visit(fb)
            if name not in order:
                order.append(name)
        for name in self.config.models:
            visit(name)
        return order

    def _build(self, cfg: ModelConfig, gate: TenantGate) -> None:
        model = self.models[cfg.name] = Model(cfg, upstream_of(cfg))
        p = lg.Pipeline(name=f"serve:{cfg.name}").metrics(
            meter_provider=self.meter_provider, provider=cfg.provider)
        if cfg.cache_ttl is not None:
            store = None
            if self.backend is not None:
                from llmguard.backends.redis import RedisStore

                store = RedisStore(self.backend, namespace=f"serve:{cfg.name}")
            p = p.cache(ttl=cfg.cache_ttl, key=_cache_key, store=store)
        if cfg.fallbacks:
            p = p.fallback(*(self.models[fb].guarded for fb in cfg.fallbacks))
        tail = lg.Pipeline()
        if cfg.retries:
            tail = tail.retry(attempts=cfg.retries + 1)
        if cfg.circuit_breaker:
            tail = tail.circuit_breaker(name=f"serve:{cfg.name}", backend=self.backend)
        if cfg.timeout is not None:
            tail = tail.timeout(cfg.timeout)
        spend = None
        if self._budgeted:  # inside Retry (each attempt reserves), outside the limiters
            spend = TenantBudget(self.tenants, model.target, _tenant)
            tail = tail.then(spend)
        if cfg.rpm or cfg.tpm:
            tail = tail.rate_limit(rpm=cfg.rpm, tpm=cfg.tpm, max_wait=cfg.max_wait,
                                   backend=self.backend)
        if cfg.adaptive:
            tail = tail.adaptive_concurrency(max_wait=cfg.max_wait)
        elif self.backend is not None:
            from llmguard.backends.redis import RedisConcurrencyLimiter

            tail = tail.concurrency_limit(RedisConcurrencyLimiter(
                self.backend, cfg.concurrency, name=f"model:{cfg.name}", max_wait=cfg.max_wait))
        else:
            tail = tail.concurrency_limit(cfg.concurrency, max_wait=cfg.max_wait)
        pipeline = p.then(*tail.layers)
        model.layers = pipeline.layers
        model.guarded = pipeline.wrap(model.send)  # also binds Metrics to its neighbours
        model.chat = lg.compose((gate, *pipeline.layers))
        # Embeddings share the model's quota and slots (same RateLimit / limiter instances), with
        # their own retry and timeout; no cache or fallback (those are chat-shaped).
        shared = [layer for layer in tail.layers
                  if isinstance(layer, (lg.RateLimit, lg.ConcurrencyLimit,
                                        lg.AdaptiveConcurrency))]
        own = lg.Pipeline()
        if cfg.retries:
            own = own.retry(attempts=cfg.retries + 1)
        if cfg.timeout is not None:
            own = own.timeout(cfg.timeout)
        if spend is not None:
            own = own.then(spend)
        model.embed = lg.compose((gate, *own.layers, *shared))

    def model_for(self, tenant: Tenant, name: Any) -> Model | None:
        """The model ``name`` if it exists and the tenant may use it (else None: a 404 either
        way, so a tenant cannot tell another tenant's model from a missing one)."""
        model = self.models.get(name) if isinstance(name, str) else None
        return model if model is not None and tenant.may_use(name) else None

    async def call(self, model: Model, tenant: Tenant, request: dict[str, Any], priority: int,
                   *, embed: bool = False) -> Any:
        """Run one request through the tenant's and the model's layers; the result is a dict
        or, for a stream, an ``lg.Stream`` whose first chunk has arrived."""
        request["model"] = model.target
        call = lg.Call(model.send_embed if embed else model.send, (), request, f"serve:{model.name}")
        call.priority = priority
        call.partition = tenant.name
        token = _tenant.set(tenant.name)
        try:
            return await self.bounded((model.embed if embed else model.chat)(call))
        finally:
            _tenant.reset(token)

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
