"""Per-tenant usage: requests, tokens and cost, in this process and (with Redis) across replicas.

Every finished request adds to its tenant's counters here and to totals per tenant, model and
status, which the OpenTelemetry counters ``llmguard.gateway.requests`` /
``llmguard.gateway.tokens`` / ``llmguard.gateway.cost`` (attribute ``llmguard.tenant``, so
``/metrics`` shows usage per tenant) observe at collection: a request costs a few dict additions,
not an SDK measurement each (attribute hashing, a lock, exemplars) on the serving thread. With ``--redis`` the
counters also go to one Redis hash per tenant, so ``GET /v1/usage`` on any replica reports the
tenant's total; the write is in the background (a lost increment while Redis is down costs
accuracy of the report, never a request).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._core.cancel import honouring_cancel
from .budgets import budget_report
from .tenants import Tenant

__all__ = ["UsageBook"]

_FIELDS = ("requests", "errors", "rejected", "input_tokens", "output_tokens", "cost_usd")


class UsageBook:
    """Records usage (see the module doc); ``report(tenant)`` is the ``/v1/usage`` body."""

    def __init__(self, meter: Any = None, redis_url: str | None = None,
                 prefix: str = "llmguard-serve", models: Any = ()) -> None:
        #: The configured model names: the only values the model label takes (any other name a
        #: client sent is labelled "unknown"), so /metrics stays bounded whatever clients send.
        self.models = frozenset(models)
        #: Totals since start: requests by (tenant, model label, status), tokens by (tenant,
        #: model label, token type), cost by (tenant, model label); read at collection.
        self._requests: dict[tuple[str, str, int], int] | None = None
        self._tokens: dict[tuple[str, str, str], int] = {}
        self._cost: dict[tuple[str, str], float] = {}
        if meter is not None:
            self._requests = {}
            meter.create_observable_counter(
                "llmguard.gateway.requests", [self._observe_requests], unit="{request}",
                description="Requests answered by the gateway, per tenant, model and status")
            meter.create_observable_counter(
                "llmguard.gateway.tokens", [self._observe_tokens], unit="{token}",
                description="Tokens used per tenant and model (gen_ai.token.type=input|output)")
            meter.create_observable_counter(
                "llmguard.gateway.cost", [self._observe_cost], unit="USD",
                description="Cost per tenant and model")
        self._redis: Any = None
        self._prefix = prefix
        self._pending: set[asyncio.Task[Any]] = set()
        if redis_url is not None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=1.0)

    def record(self, tenant: Tenant, model: str, status: int, usage: Any = None,
               price: tuple[float, float] = (0.0, 0.0)) -> None:
        """Count one answered request (``status`` is the HTTP status sent)."""
        book = tenant.usage
        book.requests += 1
        if status == 429:  # refused for a quota (the tenant's, or a provider's passed on)
            book.rejected += 1
        elif status >= 400:
            book.errors += 1
        inputs = outputs = 0
        cost = 0.0
        if usage is not None:
            inputs, outputs = usage.input_tokens, usage.output_tokens
            cost = (inputs * price[0] + outputs * price[1]) / 1e6
            book.input_tokens += inputs
            book.output_tokens += outputs
            book.cost_usd += cost
        requests = self._requests
        if requests is not None:
            label = model if model in self.models else "unknown"
            key = (tenant.name, label, status)
            requests[key] = requests.get(key, 0) + 1
            if usage is not None:
                tokens = self._tokens
                for kind, count in (("input", inputs), ("output", outputs)):
                    at = (tenant.name, label, kind)
                    tokens[at] = tokens.get(at, 0) + count
                if cost:
                    at = (tenant.name, label)
                    self._cost[at] = self._cost.get(at, 0.0) + cost
        if self._redis is not None:
            fields = {"requests": 1, "input_tokens": inputs, "output_tokens": outputs,
                      "errors": int(400 <= status != 429), "rejected": int(status == 429)}
            task = asyncio.get_running_loop().create_task(self._write(tenant.name, fields, cost))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _observe_requests(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(count, {"llmguard.tenant": tenant, "gen_ai.request.model": model,
                                    "http.response.status_code": status})
                for (tenant, model, status), count in list((self._requests or {}).items())]

    def _observe_tokens(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(count, {"llmguard.tenant": tenant, "gen_ai.request.model": model,
                                    "gen_ai.token.type": kind})
                for (tenant, model, kind), count in list(self._tokens.items())]

    def _observe_cost(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(usd, {"llmguard.tenant": tenant, "gen_ai.request.model": model})
                for (tenant, model), usd in list(self._cost.items())]

    async def _write(self, tenant: str, fields: dict[str, int], cost: float) -> None:
        key = f"{self._prefix}:usage:{{{tenant}}}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name, value in fields.items():
                if value:
                    pipe.hincrby(key, name, value)
            if cost:
                pipe.hincrbyfloat(key, "cost_usd", cost)
            await pipe.execute()
        except Exception:  # noqa: BLE001 - accounting must never fail a request
            pass

    async def report(self, tenant: Tenant) -> dict[str, Any]:
        """The tenant's usage: across replicas with Redis, else this process's."""
        local = {name: getattr(tenant.usage, name) for name in _FIELDS}
        body: dict[str, Any] = {"object": "usage", "tenant": tenant.name, **local,
                                "scope": "process"}
        if self._redis is not None:
            try:
                raw = await honouring_cancel(
                    self._redis.hgetall(f"{self._prefix}:usage:{{{tenant.name}}}"))
            except Exception:  # noqa: BLE001 - Redis down: say so, report this process
                body["scope"] = "process (redis unavailable)"
                return body
            shared = {k.decode(): v.decode() for k, v in raw.items()}
            for name in _FIELDS:
                value = shared.get(name, "0")
                body[name] = float(value) if name == "cost_usd" else int(value)
            body["scope"] = "all replicas"
        body["cost_usd"] = round(body["cost_usd"], 8)
        if tenant.budget is not None:  # what the tenant's max_budget has left, shared or not
            body["budget"] = await budget_report(tenant.budget)
        return body

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
