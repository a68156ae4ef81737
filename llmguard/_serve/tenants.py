"""Tenants: who is calling (API key, kept only as its sha256), what they may use, and their limits.

Each tenant's request and token quota is a provider-style admission: a request that does not fit
is refused at once with :class:`QuotaExceeded` (the app answers 429 with ``retry-after`` and
``x-ratelimit-*`` headers), never queued. That is what a client library pacing against the
gateway expects from a provider, and why this is not an ``lg.RateLimit`` (which queues callers
FIFO until there is room, the right thing for the gateway's own upstream quotas). It uses the
same public quota machinery: ``llmguard.backends.Quota`` windows kept in a ``RateLimitBackend``
(in memory, or ``RedisBackend`` so every replica shares one quota, atomically).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import llmguard as lg
from llmguard.backends import ConcurrencyLimiter, MemoryBackend, Quota

from .config import PRIORITIES, ConfigError, TenantConfig

__all__ = ["QuotaExceeded", "Tenant", "TenantBusy", "Tenants", "hash_key"]

#: The tenant of a gateway without configured tenants (anyone who can reach it).
ANONYMOUS = "anonymous"


def hash_key(key: str) -> str:
    """The sha256 hex digest under which an API key is kept (the key itself never is)."""
    return hashlib.sha256(key.encode()).hexdigest()


class QuotaExceeded(lg.AdmissionError):
    """The tenant's request or token quota has no room now; ``headers`` say when it will."""

    def __init__(self, message: str, *, unit: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        #: "requests" or "tokens": which quota ran out (OpenAI's error ``type``).
        self.unit = unit
        #: ``retry-after`` and ``x-ratelimit-*`` headers for the 429 answer.
        self.headers = headers


class TenantBusy(lg.AdmissionError):
    """The tenant already has its cap of concurrent calls and waited too long for a slot."""


@dataclass(slots=True)
class Usage:
    """What one tenant consumed in this process (``GET /v1/usage`` adds the shared store)."""

    requests: int = 0
    errors: int = 0
    rejected: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Tenant:
    """A configured tenant at run time: quotas, concurrency cap, priorities, usage."""

    __slots__ = ("name", "config", "quotas", "token_limit", "limiter", "default_priority",
                 "max_priority", "models", "usage", "budget")

    def __init__(self, config: TenantConfig, limiter: Any = None) -> None:
        self.name = config.name
        self.config = config
        quotas = []
        if config.rpm:
            quotas.append(Quota(config.rpm, 60.0, False))
        if config.tpm:
            quotas.append(Quota(config.tpm, 60.0, True))
        #: The tenant's quotas, enforced together (empty: unlimited).
        self.quotas = tuple(quotas)
        #: The most tokens one request may need (its token quota), None without one.
        self.token_limit = min((q.limit for q in quotas if q.tokens), default=None)
        #: Caps this tenant's concurrent calls (None: no cap). ConcurrencyLimiter-shaped.
        self.limiter = limiter
        self.default_priority = PRIORITIES[config.priority]
        self.max_priority = PRIORITIES[config.max_priority or config.priority]
        #: Models this tenant may call (None: every configured model).
        self.models = None if config.models is None else frozenset(config.models)
        self.usage = Usage()
        #: The tenant's spend cap (an ``lg.Budget``, set by the gateway), or None.
        self.budget: Any = None

    def priority(self, header: str | None) -> int:
        """The priority class of a request: its ``X-Priority`` header, capped at the tenant's
        ``max_priority`` (asking for more than allowed gets the most allowed, not an error)."""
        if not header:
            return self.default_priority
        value = PRIORITIES.get(header.strip().lower())
        if value is None:
            raise ValueError(f"X-Priority must be one of {', '.join(PRIORITIES)}, got {header!r}")
        return min(value, self.max_priority)

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def __repr__(self) -> str:
        return f"<Tenant {self.name} quotas={len(self.quotas)} usage={self.usage}>"


class Tenants:
    """The tenant registry: key hash -> tenant, plus the shared quota backend."""

    def __init__(self, configs: dict[str, TenantConfig], *, backend: Any = None,
                 limiter_factory: Any = None) -> None:
        #: Where every tenant's quota windows live (key = tenant name).
        self.backend = backend if backend is not None else MemoryBackend()
        self.by_name: dict[str, Tenant] = {}
        self._by_hash: dict[str, Tenant] = {}
        make = limiter_factory or (lambda name, n: ConcurrencyLimiter(n, max_wait=60.0))
        for name, config in configs.items():
            limiter = make(name, config.concurrency) if config.concurrency else None
            tenant = self.by_name[name] = Tenant(config, limiter)
            hashes = list(config.key_hashes)
            if config.api_key_env:
                key = os.environ.get(config.api_key_env)
                if not key:
                    raise ConfigError(f"tenants.{name}.api_key_env: the environment variable "
                                      f"{config.api_key_env} is not set (or empty)")
                hashes.append(hash_key(key))  # the key itself goes out of scope here
            for digest in hashes:
                other = self._by_hash.get(digest)
                if other is not None:
                    raise ConfigError(f"tenants.{name}: the same API key is also tenant "
                                      f"{other.name}'s; give each tenant its own key")
                self._by_hash[digest] = tenant
        #: Tenant name -> the x-ratelimit header names and limits of its quotas (``headers``).
        self._plans: dict[str, list[tuple[bool, tuple[bytes, bytes], bytes, bytes]]] = {}
        #: True when requests need a key (some tenant is configured).
        self.required = bool(self.by_name)
        if not self.required:
            self.by_name[ANONYMOUS] = Tenant(TenantConfig(ANONYMOUS, max_priority="high"))

    def authenticate(self, key: str | None) -> Tenant | None:
        """The tenant of ``key`` (the anonymous one when no tenant is configured), or None."""
        if not self.required:
            return self.by_name[ANONYMOUS]
        if not key:
            return None
        return self._by_hash.get(hash_key(key))

    def headers(self, tenant: Tenant, wait: float | None = None) -> dict[str, str]:
        """``x-ratelimit-*`` headers of the tenant's quotas now (a provider's, for pacing)."""
        return {k.decode(): v.decode() for k, v in self.raw_headers(tenant, wait)}

    def raw_headers(self, tenant: Tenant, wait: float | None = None
                    ) -> list[tuple[bytes, bytes]]:
        """:meth:`headers` as the encoded ``(name, value)`` pairs of an ASGI answer."""
        if not tenant.quotas:
            return []
        requests, tokens, paused = self.backend.headroom(tenant.name, tenant.quotas)
        plan = self._plans.get(tenant.name)
        if plan is None:  # what never changes, made once per tenant (every answer sends them)
            plan = self._plans[tenant.name] = [
                (quota.tokens, (f"x-ratelimit-limit-{unit}".encode(), str(quota.limit).encode()),
                 f"x-ratelimit-remaining-{unit}".encode(), f"x-ratelimit-reset-{unit}".encode())
                for quota in tenant.quotas
                for unit in ("tokens" if quota.tokens else "requests",)]
        out: list[tuple[bytes, bytes]] = []
        for counts_tokens, limit, remaining_name, reset_name in plan:
            out.append(limit)
            out.append((remaining_name, b"%d" % max(0, tokens if counts_tokens else requests)))
            if wait is not None:
                out.append((reset_name, b"%.3fs" % max(wait, paused)))
        return out
