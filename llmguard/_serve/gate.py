"""The tenant's gate: the layer outermost in every model's pipeline (see :class:`TenantGate`)."""

from __future__ import annotations

from typing import Any

import llmguard as lg
from llmguard.backends import TakesNow

from .estimate import ESTIMATE, basis
from .tenants import QuotaExceeded, Tenant, TenantBusy, Tenants

__all__ = ["TenantGate"]


class TenantGate:
    """Layer: the tenant's quota (refuse at once) then its concurrency cap (wait, by priority).

    Sits outermost, before the model's pipeline: a tenant over its quota costs the model nothing.
    Reserves the request's token estimate and reconciles it to the usage reported (a stream's
    final chunk: the gateway always asks upstream for it); a call refused further in (an
    ``lg.AdmissionError`` such as the model's own queue) is refunded, and so is one cancelled or
    failed before any attempt was sent (the client left while it waited for the cap). Where the quota backend
    and the tenant's limiter offer a synchronous path (``take``, ``try_acquire``: state in this
    process), a request that has room goes through without their coroutines.
    """

    __slots__ = ("tenants", "_take")

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants
        backend = tenants.backend
        self._take = backend.take if isinstance(backend, TakesNow) else None

    async def __call__(self, call: lg.Call, call_next: lg.Handler, /) -> Any:
        tenant = self.tenants.by_name.get(call.partition)  # type: ignore[arg-type]
        ticket, tokens, estimated = None, 0, None
        try:
            if tenant is not None and tenant.quotas:
                limit = tenant.token_limit
                if limit is not None:
                    tokens = lg.estimate_tokens(**call.kwargs)
                    estimated = ESTIMATE.set((basis(call.kwargs), tokens))  # the model's RateLimit
                    if tokens > limit:
                        raise lg.RequestTooLarge(
                            f"this request needs an estimated {tokens} tokens but tenant "
                            f"{tenant.name!r} may use {limit} per minute; shorten the messages or "
                            "max_tokens")
                take = self._take
                if take is not None:
                    ticket = take(tenant.name, tenant.quotas, tokens)
                if ticket is None:  # no room now (or no synchronous path): how long, or a ticket
                    wait, ticket = await self.tenants.backend.reserve(tenant.name, tenant.quotas,
                                                                      tokens)
                    if ticket is None:
                        raise self._refused(tenant, wait, tokens)
            limiter = None if tenant is None else tenant.limiter
            try:
                if limiter is not None:
                    fast = getattr(limiter, "try_acquire", None)  # free and nobody waiting
                    if fast is None or not fast():
                        try:
                            await limiter.acquire(priority=call.priority or 0,
                                                  partition=tenant.name)
                        except lg.AdmissionError as exc:
                            raise TenantBusy(f"tenant {tenant.name!r} has "
                                             f"{tenant.config.concurrency} calls in flight, its "
                                             f"cap ({exc})") from None
                try:
                    result = await call_next(call)
                except BaseException:
                    if limiter is not None:
                        limiter.release()
                    raise
            except BaseException as exc:  # refused further in, or cancelled before it was sent
                if ticket is not None and (isinstance(exc, lg.AdmissionError)
                                           or not call.record.sent):
                    self.tenants.backend.refund(tenant.name, ticket)  # never reached a provider
                raise
            if isinstance(result, lg.Stream):
                def end(_error: BaseException | None) -> None:
                    if limiter is not None:
                        limiter.release()
                    self._settle(tenant, ticket, tokens, result.usage)
                result.defer(end)
            else:
                if limiter is not None:
                    limiter.release()
                usage = call.record.usage  # read from the answer by a layer already
                self._settle(tenant, ticket, tokens,
                             lg.extract_usage(result) if usage is None else usage)
            return result
        finally:  # the estimate was this request's only
            if estimated is not None:
                ESTIMATE.reset(estimated)

    def _settle(self, tenant: Tenant | None, ticket: Any, tokens: int, usage: Any) -> None:
        if ticket is not None and usage is not None and usage.total_tokens != tokens:
            self.tenants.backend.reconcile(tenant.name, ticket, usage.total_tokens)

    def _refused(self, tenant: Tenant, wait: float, tokens: int) -> QuotaExceeded:
        requests, available, _paused = self.tenants.backend.headroom(tenant.name, tenant.quotas)
        counts_requests = any(not q.tokens for q in tenant.quotas)
        unit = "requests" if counts_requests and requests < 1 or tokens <= available else "tokens"
        headers = self.tenants.headers(tenant, wait)
        headers["retry-after"] = str(max(1, int(wait + 0.999)))  # whole seconds, rounded up
        headers["retry-after-ms"] = str(max(1, int(wait * 1000 + 0.999)))
        quota = next((q for q in tenant.quotas if q.tokens == (unit == "tokens")),
                     tenant.quotas[0])
        need = "1 request" if unit == "requests" else f"{tokens} tokens ({available} left)"
        return QuotaExceeded(
            f"Rate limit reached for tenant {tenant.name!r}: {quota.describe()}; this request "
            f"needs {need}. Try again in {wait:.3f}s.", unit=unit, headers=headers)
