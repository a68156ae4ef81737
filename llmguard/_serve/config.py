"""The gateway's TOML config: loaded and validated once at start, every error naming its key.

::

    [server]                      # all optional
    grace = 10                    # seconds in-flight requests get after SIGTERM
    max_body_bytes = 1048576

    [models.fast]                 # the name clients send as "model"
    provider = "openai"           # "fake" (offline), "litellm" or "openai" (a compatible base URL)
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "UPSTREAM_KEY"  # the key is read from this variable, never from the file
    model = "gpt-4o-mini"         # what the upstream is asked for (default: the name)
    rpm = 500                     # layers: rpm, tpm, concurrency | adaptive, retries, timeout,
    fallbacks = ["backup"]        # fallbacks, cache_ttl, circuit_breaker, max_wait

    [tenants.acme]
    api_key_sha256 = "9f86d0..."  # or api_key_env = "ACME_KEY"; keys are kept only as sha256
    rpm = 60                      # the tenant's own quotas, answered with 429 like a provider
    concurrency = 4
    priority = "normal"           # default priority; max_priority caps X-Priority
    models = ["fast"]             # the models it may use (default: all)

Errors raise :class:`ConfigError`, whose message names the key (``models.fast.rpm``) and, when
the key can be found in the file, its line.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRIORITIES", "ConfigError", "JobsConfig", "ModelConfig", "ServeConfig", "TenantConfig", "load"]

#: X-Priority values and the ConcurrencyLimiter class each maps to (higher is served first).
PRIORITIES = {"low": -1, "normal": 0, "high": 1}
PROVIDERS = ("fake", "litellm", "openai")


class ConfigError(ValueError):
    """The config file is unusable; the message names the key and (where found) the line."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model clients may ask for, where it goes and the layers guarding it."""

    name: str
    provider: str = "fake"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    latency: float = 0.01
    seconds_per_token: float = 0.0005
    fail_status: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int = 64
    adaptive: bool = False
    retries: int = 2
    timeout: float | None = 60.0
    fallbacks: tuple[str, ...] = ()
    cache_ttl: float | None = None
    circuit_breaker: bool = False
    max_wait: float = 30.0
    price_input: float = 0.0
    price_output: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant: its key hashes, quotas, priorities and the models it may use."""

    name: str
    key_hashes: tuple[str, ...] = ()
    api_key_env: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    priority: str = "normal"
    max_priority: str | None = None
    models: tuple[str, ...] | None = None
    #: The variable holding the secret its job webhooks are signed with (HMAC-SHA256).
    webhook_secret_env: str | None = None


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """``[jobs]``: background jobs over HTTP (``/v1/jobs``)."""

    max_lines: int = 100_000
    max_body_bytes: int = 64 << 20
    concurrency: int = 16
    ttl: float = 86_400.0
    reclaim_after: float = 30.0
    default_model: str | None = None
    webhook_secret_env: str | None = None
    webhook_timeout: float = 10.0
    webhook_retry_for: float = 600.0
    allow_private_callbacks: bool = False


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The whole validated config (the defaults serve the offline ``fake`` model to anyone)."""

    models: dict[str, ModelConfig] = field(default_factory=dict)
    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    grace: float = 10.0
    max_body_bytes: int = 1 << 20
    source: str | None = None
    jobs: JobsConfig = field(default_factory=JobsConfig)


def default_config() -> ServeConfig:
    """No file: the offline fake models, no tenants (open, on loopback by default)."""
    return ServeConfig(models={
        "fake": ModelConfig("fake"),
        "fake-fail": ModelConfig("fake-fail", fail_status=500, retries=0),
        "fake-429": ModelConfig("fake-429", fail_status=429, retries=0),
    }, jobs=JobsConfig(default_model="fake"))


# key -> (check, default-taking dataclass field); check returns the converted value or raises
# _Bad with what was expected.
class _Bad(Exception):
    pass


def _int(low: int = 1, high: int | None = None) -> Any:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high and v > high):
            raise _Bad(f"an integer >= {low}" + (f" and <= {high}" if high else ""))
        return v
    return check


def _num(low_open: bool = True) -> Any:
    def check(v: Any) -> float:
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        if bad or v < 0 or (low_open and v == 0):
            raise _Bad("a number " + ("> 0" if low_open else ">= 0") + " (seconds or USD)")
        return float(v)
    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


def _strs(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _Bad("a list of strings")
    return tuple(v)


def _one_of(*choices: str) -> Any:
    def check(v: Any) -> str:
        if v not in choices:
            raise _Bad("one of " + ", ".join(repr(c) for c in choices))
        return v
    return check


def _hashes(v: Any) -> tuple[str, ...]:
    hashes = _strs(v)
    for h in hashes:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", h):
            raise _Bad("the sha256 hex digest of the key (64 hex characters; "
                       "`llmguard serve --hash-key` prints it), never the key itself")
    return tuple(h.lower() for h in hashes)


_MODEL_KEYS = {
    "provider": _one_of(*PROVIDERS), "model": _str, "base_url": _str, "api_key_env": _str,
    "latency": _num(False), "seconds_per_token": _num(False), "fail_status": _int(400, 599),
    "rpm": _int(), "tpm": _int(), "concurrency": _int(), "adaptive": _bool,
    "retries": _int(0), "timeout": _num(), "fallbacks": _strs, "cache_ttl": _num(),
    "circuit_breaker": _bool, "max_wait": _num(), "price_input": _num(False),
    "price_output": _num(False),
}
_TENANT_KEYS = {
    "api_key_sha256": _hashes, "api_key_env": _str, "rpm": _int(), "tpm": _int(),
    "concurrency": _int(), "priority": _one_of(*PRIORITIES), "max_priority": _one_of(*PRIORITIES),
    "models": _strs, "webhook_secret_env": _str,
}
_SERVER_KEYS = {"grace": _num(False), "max_body_bytes": _int(1024)}
_JOBS_KEYS = {
    "max_lines": _int(), "max_body_bytes": _int(1024), "concurrency": _int(), "ttl": _num(),
    "reclaim_after": _num(), "default_model": _str, "webhook_secret_env": _str,
    "webhook_timeout": _num(), "webhook_retry_for": _num(False),
    "allow_private_callbacks": _bool,
}
_RENAMES = {"api_key_sha256": "key_hashes"}


class _Reader:
    """Validation with line lookup: ``fail(path, problem)`` raises a ConfigError."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.lines = source, text.splitlines()

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path`` (a table header or ``key =`` inside its table), if found."""
        table: tuple[str, ...] = ()
        for number, line in enumerate(self.lines, 1):
            header = re.match(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$", line)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(1).split("."))
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
                out[_RENAMES.get(key, key)] = check(value)
            except _Bad as exc:
                raise self.fail((*path, key), f"must be {exc}, got {value!r}") from None
        return out


def load(path: str) -> ServeConfig:
    """Read and validate the TOML file at ``path``; raises :class:`ConfigError`."""
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
    return parse(data, _Reader(path, text))


def parse(data: dict[str, Any], reader: _Reader) -> ServeConfig:
    """Validate a parsed TOML document (see the module doc for the schema)."""
    unknown = set(data) - {"server", "models", "tenants", "jobs"}
    if unknown:
        raise reader.fail((sorted(unknown)[0],),
                          "unknown table; known: server, models, tenants, jobs")
    server = reader.section(("server",), data.get("server", {}), _SERVER_KEYS)
    jobs = JobsConfig(**reader.section(("jobs",), data.get("jobs", {}), _JOBS_KEYS))
    models_table = data.get("models")
    if models_table is None:
        models = dict(default_config().models)
    else:
        if not isinstance(models_table, dict) or not models_table:
            raise reader.fail(("models",), "needs at least one [models.NAME] table")
        models = {}
        for name, table in models_table.items():
            fields = reader.section(("models", name), table, _MODEL_KEYS)
            provider = fields.setdefault("provider", "fake")
            if provider == "openai" and "base_url" not in fields:
                raise reader.fail(("models", name), 'provider = "openai" needs base_url')
            if provider != "fake" and "fail_status" in fields:
                raise reader.fail(("models", name, "fail_status"), "only for the fake provider")
            if fields.get("adaptive") and "concurrency" in fields:
                raise reader.fail(("models", name, "adaptive"), "set adaptive or concurrency")
            models[name] = ModelConfig(name, **fields)
        for name, m in models.items():
            for fb in m.fallbacks:
                if fb not in models or fb == name:
                    raise reader.fail(("models", name, "fallbacks"),
                                      f"{fb!r} is not another model of this file")
        _no_cycle(models, reader)
    tenants = {}
    for name, table in (data.get("tenants") or {}).items():
        fields = reader.section(("tenants", name), table, _TENANT_KEYS)
        if not fields.get("key_hashes") and not fields.get("api_key_env"):
            raise reader.fail(("tenants", name), "needs api_key_sha256 or api_key_env")
        for model in fields.get("models", ()):
            if model not in models:
                raise reader.fail(("tenants", name, "models"), f"no model named {model!r}")
        t = TenantConfig(name, **fields)
        if t.max_priority and PRIORITIES[t.max_priority] < PRIORITIES[t.priority]:
            raise reader.fail(("tenants", name, "max_priority"), "is below its priority")
        tenants[name] = t
    if jobs.default_model is not None and jobs.default_model not in models:
        raise reader.fail(("jobs", "default_model"), f"no model named {jobs.default_model!r}")
    return ServeConfig(models, tenants, source=reader.source, jobs=jobs, **server)


def _no_cycle(models: dict[str, ModelConfig], reader: _Reader) -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        for fb in models[name].fallbacks:
            if fb in path:
                raise reader.fail(("models", path[0], "fallbacks"),
                                  "fallbacks loop: " + " -> ".join((*path, fb)))
            visit(fb, (*path, fb))
    for name in models:
        visit(name, (name,))
