"""The gateway's engine: one pipeline per model, one request's path through tenant and model layers.

A chat request runs ``TenantGate`` (the tenant's quota, refused at once, then its concurrency
cap) and then the model's pipeline in the README's order: Metrics, Cache, Fallback (to the other
models' own pipelines, so a fallback model's quota protects it too), Retry, CircuitBreaker,
RateLimit, ConcurrencyLimit | AdaptiveConcurrency, its terminal timing each attempt. The
model's rate limit (or router) and concurrency limiter serve waiting calls by priority
(``call.priority``), then round-robin across tenants (``call.partition``: the tenant).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import llmguard as lg

from .._pipeline.stack import build_stack
from .._upstream.deployments import router_of
from .abandon import Abandon
from .budgets import TenantBudget, attach_budgets
from .config import ModelConfig, ServeConfig
from .estimate import estimate
from .model import Model
from .gate import TenantGate
from .tenants import Tenant, Tenants
from .usage import UsageBook

__all__ = ["Gateway", "Model", "ShuttingDown"]


class ShuttingDown(Exception):
    """The grace period after SIGTERM ran out before this request finished."""


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
        attach_budgets(self.tenants, config.models, self.backend)
        self._budgeted = any(t.budget is not None for t in self.tenants.by_name.values())
        #: Where the models' Metrics layers export (None: the global meter provider; no spans).
        self.meter_provider, self.tracer_provider = meter_provider, tracer_provider
        meter = None
        if meter_provider is not None:
            meter = meter_provider.get_meter("llmguard.serve")
        self.usage = UsageBook(meter, redis_url, redis_prefix, models=config.models)
        self.models: dict[str, Model] = {}
        gate = TenantGate(self.tenants)
        for name in self._build_order():
            self._build(self.config.models[name], gate)
        #: Loop time after which in-flight work is ended cleanly (set by ``drain``), or None.
        self.stop_at: float | None = None
        self.draining = False
        self._scopes: set[asyncio.Timeout] = set()
        #: Tasks awaiting in ``bounded`` since before a drain -> their ``cancelling()`` then;
        #: those the drain deadline cancelled.
        self._running: dict[asyncio.Task[Any], int] = {}
        self._expired: set[asyncio.Task[Any]] = set()

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
        CircuitBreaker, RateLimit, concurrency; each attempt timed by the terminal: not a
        Timeout layer, see :attr:`.model.Model.aheads`), the tenant gate outermost."""
        model = self.models[cfg.name] = Model(cfg)
        name = f"serve:{cfg.name}"
        cache: dict[str, Any] = {"per_partition": True}  # tenants never see each other's answers
        limiter = None
        if self.backend is not None:
            from llmguard.backends.redis import RedisConcurrencyLimiter, RedisStore

            cache["store"] = RedisStore(self.backend, namespace=name)
            limiter = RedisConcurrencyLimiter(self.backend, cfg.stack.concurrency,
                                              name=f"model:{cfg.name}",
                                              max_wait=cfg.stack.max_wait)
        router = None
        if cfg.deployments:  # in RateLimit's place: each deployment its own upstream and quotas
            router = router_of(cfg.deployments, cfg.strategy, cfg.stack.max_wait, self.backend)
        # A tenant's budget: inside Retry (each attempt reserves), outside the limiters.
        spend = TenantBudget(self.tenants, model.target) if self._budgeted else None
        recipe = replace(cfg.stack, timeout=None)
        stack = build_stack(recipe, name=name, backend=self.backend, limiter=limiter,
                            budget=spend, rate_limit=router,
                            metrics={"meter_provider": self.meter_provider,
                                     "tracer_provider": self.tracer_provider,
                                     "provider": cfg.provider},
                            cache=cache, fallback=lambda fb: self.models[fb].guarded,
                            tokens=estimate)  # the tenant gate's estimate, not a second one
        model.layers = tuple(stack.layers)
        model.guarded = stack.wrap(model.send, terminal=model.terminal())
        model.chat = lg.Pipeline(gate, *stack.layers, name=name).build(model.terminal())
        # Embeddings: the model's Metrics, quota, slots (same instances), own Retry, no Cache.
        shared = [layer for layer in stack.layers
                  if isinstance(layer, (lg.Metrics, lg.RateLimit, lg.Router, lg.ConcurrencyLimit,
                                        lg.AdaptiveConcurrency))]
        own = build_stack(replace(recipe, fallbacks=(), cache_ttl=None, circuit_breaker=False,
                                  rpm=None, tpm=None, input_tpm=None, output_tpm=None))
        own_layers = [layer for layer in own.layers if isinstance(layer, lg.Retry)]
        own_layers += [] if spend is None else [spend]
        metrics, limits = shared[:1], shared[1:]
        model.embed = lg.Pipeline(gate, *metrics, *own_layers, *limits, name=name).build(
            model.terminal(embed=True))

    def model_for(self, tenant: Tenant, name: Any) -> Model | None:
        """The model ``name`` if it exists and the tenant may use it (else None: a 404 either
        way, so a tenant cannot tell another tenant's model from a missing one)."""
        model = self.models.get(name) if isinstance(name, str) else None
        return model if model is not None and tenant.may_use(name) else None

    def call(self, model: Model, tenant: Tenant, request: dict[str, Any], priority: int,
             *, embed: bool = False, abandon: Abandon | None = None) -> Awaitable[Any]:
        """Run one request through the tenant's and the model's layers (awaited: a dict or, for
        a stream, an ``lg.Stream`` whose first chunk has arrived). Once ``abandon`` is set, a
        request not sent upstream yet is dropped (:class:`~.abandon.Abandoned`)."""
        return self.run(model, self.start(model, tenant, request, priority, embed=embed),
                        abandon=abandon)

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

    def run(self, model: Model, call: lg.Call, *, abandon: Abandon | None = None
            ) -> Awaitable[Any]:
        """Run a call made by :meth:`start` through its model's handler (dropped unsent once
        ``abandon`` is set): the handler awaited in :meth:`bounded`'s frame, not a frame more."""
        handler = model.embed if call.record.operation == "embeddings" else model.chat
        return self.bounded(handler(call), abandon, call)

    async def bounded(self, awaitable: Any, abandon: Abandon | None = None,
                      call: lg.Call | None = None) -> Any:
        """Await ``awaitable`` no later than the drain deadline (then :class:`ShuttingDown`),
        with ``abandon`` bound to ``call`` meanwhile (see :meth:`run`). Before a drain nothing
        is scheduled: the task is noted (a dict entry, not an ``asyncio.timeout`` scope with its
        two coroutines per request), and ``drain`` cancels the tasks still here at the deadline,
        which this turns into :class:`ShuttingDown` (a cancellation of the caller's own stays a
        cancellation, as under ``asyncio.timeout``). Once draining, each await gets a scope."""
        if abandon is not None:
            try:
                abandon.bind(call)
            except BaseException:
                awaitable.close()  # never started: not left unawaited
                raise
        task = asyncio.current_task()
        try:
            if self.stop_at is not None or task is None or task in self._running:
                result = await self._scoped(awaitable)
            else:
                cancelling = self._running[task] = task.cancelling()
                try:
                    result = await awaitable
                except asyncio.CancelledError:
                    if task in self._expired and task.uncancel() <= cancelling:
                        raise self._shutting_down() from None
                    raise
                finally:
                    del self._running[task]
                    self._expired.discard(task)
        except BaseException as exc:
            if abandon is not None:
                abandon.unbind(exc)
            raise
        if abandon is not None:
            abandon.unbind(None)
        return result

    def _expire(self, task: asyncio.Task[Any]) -> None:
        """The drain deadline came for a task still awaiting in :meth:`bounded`."""
        if task in self._running and task not in self._expired:
            self._expired.add(task)
            task.cancel()

    async def _scoped(self, awaitable: Any) -> Any:
        """:meth:`bounded` once draining: one ``asyncio.timeout`` per await, tracked while
        active, so a later ``drain`` can pull its deadline in."""
        scope = asyncio.timeout_at(self.stop_at)
        self._scopes.add(scope)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired() and self.stop_at is not None:
                raise self._shutting_down() from None
            raise
        finally:
            self._scopes.discard(scope)

    @staticmethod
    def _shutting_down() -> ShuttingDown:
        return ShuttingDown("the gateway is shutting down and its grace period for requests in "
                            "flight ran out; retry on another replica")

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
        for task in list(self._running):
            loop.call_at(self.stop_at, self._expire, task)

    def secrets(self) -> list[str]:
        """Upstream keys this process holds (never to be printed)."""
        found: list[str] = []
        for model in self.models.values():
            for upstream, _ in model.upstreams.values():
                found += upstream.secrets()
        return found

    async def aclose(self) -> None:
        await self.usage.aclose()
        for model in self.models.values():
            for upstream, _ in model.upstreams.values():
                await upstream.aclose()
        if self.backend is not None:
            await self.backend.aclose()
