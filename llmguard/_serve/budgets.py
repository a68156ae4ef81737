"""Per-tenant spend caps: ``max_budget`` and ``budget_duration`` of a ``[tenants.NAME]`` table.

Each such tenant gets one ``lg.Budget`` (in Redis with ``--redis``, so every replica draws on one
cap, atomically), priced with the models' ``price_input``/``price_output`` (and
``price_cached_input`` for cached prompt tokens). A ``TenantBudget``
layer sits in every model's pipeline inside its Retry (so each attempt reserves its maximum cost
and a refusal is not retried) and outside its limiters; it charges the calling tenant's budget
at the price of the model it guards (a fallback model at its own). A tenant over its budget gets
429 ``insufficient_quota``, as OpenAI answers an account out of credit.
"""

from __future__ import annotations

from typing import Any

import llmguard as lg

from .config import ModelConfig
from .tenants import Tenants

__all__ = ["TenantBudget", "attach_budgets", "budget_report"]


def attach_budgets(tenants: Tenants, models: dict[str, ModelConfig], backend: Any) -> None:
    """Give every tenant with ``max_budget`` its Budget (``backend``: a RedisBackend or None)."""
    prices: dict[str, tuple[float, float, float]] = {}
    for cfg in models.values():  # keyed as the upstream is asked; the dearest price if shared
        target = cfg.model or cfg.name
        cached = cfg.price_input if cfg.price_cached_input is None else cfg.price_cached_input
        old = prices.get(target, (0.0, 0.0, 0.0))
        prices[target] = (max(old[0], cfg.price_input), max(old[1], cfg.price_output),
                          max(old[2], cached))
    for tenant in tenants.by_name.values():
        config = tenant.config
        if config.max_budget is not None:
            tenant.budget = lg.Budget(config.max_budget, per=config.budget_duration,
                                      prices=prices, name=f"tenant:{tenant.name}",
                                      backend=backend)


class TenantBudget:
    """Layer: the calling tenant's Budget (if any), pricing the call as ``target``."""

    __slots__ = ("tenants", "target")

    def __init__(self, tenants: Tenants, target: str) -> None:
        self.tenants, self.target = tenants, target

    async def __call__(self, call: lg.Call, call_next: lg.Handler, /) -> Any:
        tenant = self.tenants.by_name.get(call.partition)  # the gateway's call: its tenant
        budget = None if tenant is None else tenant.budget
        if budget is None:
            return await call_next(call)
        if call.kwargs.get("model") == self.target:
            return await budget(call, call_next)
        saved = call.kwargs  # a fallback arrives named as the primary: price it as itself
        call.kwargs = {**saved, "model": self.target}
        try:
            return await budget(call, call_next)
        finally:
            call.kwargs = saved


async def budget_report(budget: Any) -> dict[str, Any]:
    """The ``budget`` object of ``/v1/usage``: cap, spent, reserved, remaining, window."""
    stats = await budget.usage()
    return {"max_budget": stats.cap_usd, "spent_usd": round(stats.spent_usd, 8),
            "reserved_usd": round(stats.reserved_usd, 8),
            "remaining_usd": round(stats.remaining_usd, 8),
            "budget_duration": budget.per, "window": stats.window,
            "resets_at": stats.resets_at}
