"""The gateway's own TOML tables (``config.py``): each key and the check that converts its value
(the checks and the line-aware reader: ``_core/config_file.py``; the upstream and deployment
keys it shares with ``llmguard run --config``: ``_upstream/config.py``, ``deployments.py``)."""

from __future__ import annotations

import re
from typing import Any

from .._core.config_file import Bad, Reader, boolean, integer, number, one_of, string, strings
from .._upstream.config import UPSTREAM_KEYS

__all__ = ["DURATIONS", "JOBS_KEYS", "MODEL_KEYS", "PRIORITIES", "RENAMES", "SERVER_KEYS",
           "TENANT_KEYS", "duration", "key_hashes", "no_cycle"]

#: X-Priority values and the ConcurrencyLimiter class each maps to (higher is served first).
PRIORITIES = {"low": -1, "normal": 0, "high": 1}

#: ``budget_duration`` values: calendar windows in UTC, and LiteLLM's spellings of the same.
DURATIONS = {"minute": "minute", "hour": "hour", "day": "day", "month": "month",
             "1h": "hour", "1d": "day", "24h": "day", "1mo": "month"}


def duration(v: Any) -> str:
    """Check: a budget window, as a Budget's ``per`` ("minute", "hour", "day", "month")."""
    if v not in DURATIONS:
        raise Bad("one of " + ", ".join(repr(d) for d in DURATIONS) + " (a calendar window in "
                  "UTC that resets at its start; LiteLLM's rolling '30d' has no equivalent: "
                  "use 'month')")
    return DURATIONS[v]


def key_hashes(v: Any) -> tuple[str, ...]:
    """Check: sha256 hex digests of API keys (never a key itself), lower-cased."""
    hashes = strings(v)
    for h in hashes:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", h):
            raise Bad("the sha256 hex digest of the key (64 hex characters; "
                       "`llmguard serve --hash-key` prints it), never the key itself")
    return tuple(h.lower() for h in hashes)


#: Each table's keys and the check that converts its value (or raises :class:`Bad`).
MODEL_KEYS = {
    **UPSTREAM_KEYS, "rpm": integer(), "tpm": integer(), "input_tpm": integer(), "output_tpm": integer(),
    "concurrency": integer(), "adaptive": boolean,
    "retries": integer(0), "timeout": number(), "fallbacks": strings, "cache_ttl": number(),
    "circuit_breaker": boolean, "max_wait": number(), "burst": number(),
    "margin": number(False), "refill": one_of("auto", "window", "continuous"),
    "charge": one_of("reserved", "actual"), "price_input": number(False),
    "price_output": number(False), "price_cached_input": number(False),
    "batch_api": one_of("openai", "anthropic"), "batch_enqueued_tokens": integer(),
    "strategy": one_of("headroom", "weighted", "least_latency", "ordered"),
}
TENANT_KEYS = {
    "api_key_sha256": key_hashes, "api_key_env": string, "rpm": integer(), "tpm": integer(),
    "concurrency": integer(), "priority": one_of(*PRIORITIES), "max_priority": one_of(*PRIORITIES),
    "models": strings, "webhook_secret_env": string, "max_budget": number(),
    "budget_duration": duration,
}
SERVER_KEYS = {
    "grace": number(False), "max_body_bytes": integer(1024), "allow_origins": strings,
    "public_metrics": boolean, "metrics_key_env": string, "header_timeout": number(),
    "write_timeout": number(), "max_connections": integer(8),
}
JOBS_KEYS = {
    "max_lines": integer(), "max_body_bytes": integer(1024), "concurrency": integer(), "ttl": number(),
    "reclaim_after": number(), "default_model": string, "webhook_secret_env": string,
    "webhook_timeout": number(), "webhook_retry_for": number(False),
    "allow_private_callbacks": boolean, "max_jobs_per_tenant": integer(),
    "batch_poll": number(),
}
#: TOML key -> dataclass field, where they differ (``[tenants.NAME]``).
RENAMES = {"api_key_sha256": "key_hashes"}


def no_cycle(reader: Reader, fallbacks: dict[str, tuple[str, ...]]) -> None:
    """Fail on a loop of ``[models.NAME] fallbacks`` (model name -> its fallbacks)."""
    def visit(name: str, path: tuple[str, ...]) -> None:
        for fb in fallbacks[name]:
            if fb in path:
                raise reader.fail(("models", path[0], "fallbacks"),
                                  "fallbacks loop: " + " -> ".join((*path, fb)))
            visit(fb, (*path, fb))
    for name in fallbacks:
        visit(name, (name,))
