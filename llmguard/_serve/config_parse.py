"""Value checks and the line-aware reader behind the gateway's TOML config (``config.py``).

Each key of a table has a check that converts its value or raises :class:`Bad` saying what was
expected; :class:`Reader` turns that into a :class:`ConfigError` naming the key and its line.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from typing import Any

__all__ = ["DEPLOYMENT_KEYS", "DURATIONS", "JOBS_KEYS", "MODEL_KEYS", "PER_DEPLOYMENT",
           "PRIORITIES", "PROVIDERS", "RENAMES", "SERVER_KEYS", "TENANT_KEYS", "UPSTREAM_KEYS",
           "Bad", "ConfigError",
           "Reader", "boolean", "duration", "integer", "key_hashes",
           "number", "one_of", "read_toml", "string", "strings"]

#: X-Priority values and the ConcurrencyLimiter class each maps to (higher is served first).
PRIORITIES = {"low": -1, "normal": 0, "high": 1}
PROVIDERS = ("fake", "litellm", "openai")


class ConfigError(ValueError):
    """The config file is unusable; the message names the key and (where found) the line."""


class Bad(Exception):
    """A value check failed; the message says what was expected ("an integer >= 1")."""


def integer(low: int = 1, high: int | None = None) -> Any:
    """Check: an integer in ``[low, high]`` (not a bool)."""
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high and v > high):
            raise Bad(f"an integer >= {low}" + (f" and <= {high}" if high else ""))
        return v
    return check


def number(low_open: bool = True) -> Any:
    """Check: a finite number > 0 (>= 0 unless ``low_open``)."""
    def check(v: Any) -> float:
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        if bad or v < 0 or (low_open and v == 0):
            raise Bad("a number " + ("> 0" if low_open else ">= 0") + " (seconds or USD)")
        return float(v)
    return check


def string(v: Any) -> str:
    """Check: a non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise Bad("a non-empty string")
    return v


def boolean(v: Any) -> bool:
    """Check: true or false."""
    if not isinstance(v, bool):
        raise Bad("true or false")
    return v


def strings(v: Any) -> tuple[str, ...]:
    """Check: a string or a list of strings, as a tuple."""
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise Bad("a list of strings")
    return tuple(v)


def one_of(*choices: str) -> Any:
    """Check: one of ``choices``."""
    def check(v: Any) -> str:
        if v not in choices:
            raise Bad("one of " + ", ".join(repr(c) for c in choices))
        return v
    return check


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
#: Where a model or a deployment goes (``upstream.UpstreamConfig``'s fields).
UPSTREAM_KEYS = {
    "provider": one_of(*PROVIDERS), "model": string, "base_url": string, "api_key_env": string,
    "latency": number(False), "seconds_per_token": number(False), "fail_status": integer(400, 599),
}
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
#: ``[[models.NAME.deployments]]``: one upstream of the model, with its own quotas (the Router).
DEPLOYMENT_KEYS = {
    "name": string, **UPSTREAM_KEYS, "rpm": integer(), "tpm": integer(),
    "input_tpm": integer(), "output_tpm": integer(),
    "concurrency": integer(), "weight": number(), "timeout": number(),
    "refill": one_of("auto", "window", "continuous"), "burst": number(), "margin": number(False),
}
#: Model keys that belong to each deployment once a model has ``deployments``.
PER_DEPLOYMENT = (*UPSTREAM_KEYS, "rpm", "tpm", "input_tpm", "output_tpm", "refill", "burst",
                  "margin")
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
#: TOML key -> dataclass field, where they differ.
RENAMES = {"api_key_sha256": "key_hashes"}


class Reader:
    """Validation with line lookup: ``fail(path, problem)`` raises a ConfigError."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.lines = source, text.splitlines()

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path`` (a table header or ``key =`` inside its table), if found; the
        i-th ``[[name]]`` table is ``(*name, str(i))``."""
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines, 1):
            header = re.match(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$", line)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    arrays[table] = arrays.get(table, -1) + 1
                    table = (*table, str(arrays[table]))
                if table[:len(path)] == path:  # the table itself, or its first sub-table
                    return number
                continue
            key = re.match(r"\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*=", line)
            if key and (*table, key.group(1)) == path:
                return number
        return None

    def fail(self, path: tuple[str, ...], problem: str) -> ConfigError:
        line = self.line_of(path)
        where = f"{self.source}" + (f", line {line}" if line else "")
        return ConfigError(f"{where}: {'.'.join(path)}: {problem}")

    def section(self, path: tuple[str, ...], table: Any, keys: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.fail(path, "must be a table ([" + ".".join(path) + "])")
        out = {}
        for key, value in table.items():
            check = keys.get(key)
            if check is None:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail((*path, key), f"unknown key{hint}; known: {', '.join(keys)}")
            try:
                out[RENAMES.get(key, key)] = check(value)
            except Bad as exc:
                raise self.fail((*path, key), f"must be {exc}, got {value!r}") from None
        return out

    def no_cycle(self, fallbacks: dict[str, tuple[str, ...]]) -> None:
        """Fail on a loop of ``[models.NAME] fallbacks`` (model name -> its fallbacks)."""
        def visit(name: str, path: tuple[str, ...]) -> None:
            for fb in fallbacks[name]:
                if fb in path:
                    raise self.fail(("models", path[0], "fallbacks"),
                                    "fallbacks loop: " + " -> ".join((*path, fb)))
                visit(fb, (*path, fb))
        for name in fallbacks:
            visit(name, (name,))


def read_toml(path: str) -> tuple[dict[str, Any], Reader]:
    """The TOML document at ``path`` and a :class:`Reader` over its text; raises
    :class:`ConfigError` naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path!r}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message already says "(at line N, column M)"
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data, Reader(path, text)
