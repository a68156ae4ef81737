"""The gateway's TOML config: loaded and validated once at start, every error naming its key.

::

    [server]                      # all optional
    grace = 10                    # seconds in-flight requests get after SIGTERM
    max_body_bytes = 1048576      # HTTP bodies and WebSocket messages
    metrics_key_env = "METRICS_KEY"  # /metrics asks for it once tenants exist (or public_metrics)
    allow_origins = []            # browser origins an open gateway accepts besides loopback
    header_timeout = 10           # seconds to send a request's headers
    write_timeout = 30            # seconds a streaming client may stop reading
    max_connections = 4000        # default: under the open-file limit

    [models.fast]                 # the name clients send as "model"
    provider = "openai"           # "fake" (offline), "litellm" or "openai" (a compatible base URL)
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "UPSTREAM_KEY"  # the key is read from this variable, never from the file
    model = "gpt-4o-mini"         # what the upstream is asked for (default: the name)
    rpm = 500                     # layers (StackSpec): rpm, tpm, input_tpm, output_tpm, burst,
    fallbacks = ["backup"]        # margin, refill, charge, concurrency | adaptive, retries,
                                  # timeout, fallbacks, cache_ttl, circuit_breaker, max_wait

    [models.gpt4o]                # one model over several deployments (a Router), each with
    strategy = "headroom"         # its own upstream and quotas: headroom|weighted|least_latency|ordered
    [[models.gpt4o.deployments]]
    name = "eu"                   # provider, base_url, api_key_env, model, rpm, tpm, input_tpm,
    provider = "openai"           # output_tpm, refill, burst, margin (as above), concurrency,
    base_url = "https://eu.example/v1"  # weight, timeout (per attempt); the model's own keys
                                  # then cover what is shared (retries, cache, ...)
    rpm = 500

    [tenants.acme]
    api_key_sha256 = "9f86d0..."  # or api_key_env = "ACME_KEY"; keys are kept only as sha256
    rpm = 60                      # the tenant's own quotas, answered with 429 like a provider
    concurrency = 4
    priority = "normal"           # default priority; max_priority caps X-Priority
    models = ["fast"]             # the models it may use (default: all)

Errors raise :class:`ConfigError`, whose message names the key (``models.fast.rpm``) and, when
the key can be found in the file, its line. The gateway's keys and their checks are in
``config_parse.py``; the reader in ``_core/config_file.py``, the upstream and deployment keys
(shared with ``llmguard run --config``) in ``_upstream/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .._core.config_file import ConfigError, Reader, read_toml
from .._pipeline.stack import StackSpec, stack_options
from .._upstream.config import UpstreamConfig
from .._upstream.deployments import DeploymentConfig, model_deployments
from .config_parse import (JOBS_KEYS, MODEL_KEYS, PRIORITIES, RENAMES, SERVER_KEYS, TENANT_KEYS,
                           no_cycle)

__all__ = ["PRIORITIES", "SERVE_STACK", "ConfigError", "DeploymentConfig", "JobsConfig",
           "ModelConfig", "ServeConfig", "TenantConfig", "UpstreamConfig", "load"]

#: A model's layers by default: a gateway answers in time (at most 30 s waiting for quota or a
#: slot, then 429), retries twice, and charges the tokens the provider reports.
SERVE_STACK = StackSpec(concurrency=64, retries=2, max_wait=30.0, charge="actual")


@dataclass(frozen=True, slots=True)
class ModelConfig(UpstreamConfig):
    """One model clients may ask for, where it goes (:class:`UpstreamConfig`) and the layers
    guarding it."""

    #: The layers guarding it (``rpm``, ``retries``, ``fallbacks``, ... as TOML keys).
    stack: StackSpec = SERVE_STACK
    price_input: float = 0.0
    price_output: float = 0.0
    #: Cached input tokens (OpenAI's ``cached_tokens``, Anthropic's cache reads), USD per
    #: million; None: billed as input.
    price_cached_input: float | None = None
    #: Several upstreams serving this model, routed by headroom (none: one upstream, above).
    deployments: tuple[DeploymentConfig, ...] = ()
    strategy: str = "headroom"
    #: The batch API of ``mode=batch`` jobs at ``base_url``: "openai" (the Batch API, the
    #: default of ``provider = "openai"``) or "anthropic" (Message Batches).
    batch_api: str | None = None
    #: The provider's enqueued-token limit for this model (``llmguard run --enqueued-tokens``):
    #: a job's batches beyond it wait for earlier ones to end instead of failing; None: unknown.
    batch_enqueued_tokens: int | None = None


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
    #: Spend cap in USD (a Budget: each attempt reserves its maximum cost), or None.
    max_budget: float | None = None
    #: The window the cap resets on ("minute", "hour", "day", "month"; None: a total).
    budget_duration: str | None = None


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
    #: Jobs one tenant may have queued or running at once (more: 429).
    max_jobs_per_tenant: int = 100
    #: First poll interval of a batch job's provider batches (doubling to 60 s while nothing
    #: changes).
    batch_poll: float = 5.0


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The whole validated config (the defaults serve the offline ``fake`` model to anyone)."""

    models: dict[str, ModelConfig] = field(default_factory=dict)
    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    grace: float = 10.0
    max_body_bytes: int = 1 << 20
    source: str | None = None
    jobs: JobsConfig = field(default_factory=JobsConfig)
    #: Browser origins (``https://app.example``) an open gateway (no tenants) accepts besides
    #: loopback ones; ``--allow-origin``.
    allow_origins: tuple[str, ...] = ()
    #: ``/metrics`` without a key on a gateway with tenants (``--public-metrics``).
    public_metrics: bool = False
    #: The variable holding the bearer key ``/metrics`` asks for on a gateway with tenants.
    metrics_key_env: str | None = None
    #: Seconds a connection may take to send a request's headers before it is closed.
    header_timeout: float = 10.0
    #: Seconds one write to a streaming client may stall (it stopped reading) before the
    #: stream is ended and its model slot freed.
    write_timeout: float = 30.0
    #: Open connections at most (None: from the open-file limit); past it the oldest idle one
    #: (no request in progress) is closed for the new one.
    max_connections: int | None = None


def default_config() -> ServeConfig:
    """No file: the offline fake models, no tenants (open, on loopback by default)."""
    return ServeConfig(models={
        "fake": ModelConfig("fake"),
        "fake-fail": ModelConfig("fake-fail", fail_status=500, stack=replace(SERVE_STACK, retries=0)),
        "fake-429": ModelConfig("fake-429", fail_status=429, stack=replace(SERVE_STACK, retries=0)),
    }, jobs=JobsConfig(default_model="fake"))


def load(path: str) -> ServeConfig:
    """Read and validate the TOML file at ``path``; raises :class:`ConfigError`."""
    return parse(*read_toml(path))


def parse(data: dict[str, Any], reader: Reader) -> ServeConfig:
    """Validate a parsed TOML document (see the module doc for the schema)."""
    unknown = set(data) - {"server", "models", "tenants", "jobs"}
    if unknown:
        raise reader.fail((sorted(unknown)[0],),
                          "unknown table; known: server, models, tenants, jobs")
    server = reader.section(("server",), data.get("server", {}), SERVER_KEYS)
    jobs = JobsConfig(**reader.section(("jobs",), data.get("jobs", {}), JOBS_KEYS))
    models_table = data.get("models")
    if models_table is None:
        models = dict(default_config().models)
    else:
        if not isinstance(models_table, dict) or not models_table:
            raise reader.fail(("models",), "needs at least one [models.NAME] table")
        models = {}
        for name, table in models_table.items():
            deployments = model_deployments(name, table, reader)
            fields = reader.section(("models", name), table, MODEL_KEYS)
            if deployments:
                fields["deployments"] = deployments
            provider = fields.setdefault("provider", "fake")
            if provider == "openai" and "base_url" not in fields:
                raise reader.fail(("models", name), 'provider = "openai" needs base_url')
            for key in ("batch_api", "batch_enqueued_tokens"):
                if key in fields and (provider != "openai" or deployments):
                    raise reader.fail(("models", name, key), 'needs provider = "openai" and no '
                                      "deployments (the batch API lives at its base_url)")
            if provider != "fake" and "fail_status" in fields:
                raise reader.fail(("models", name, "fail_status"), "only for the fake provider")
            if fields.get("adaptive") and "concurrency" in fields:
                raise reader.fail(("models", name, "adaptive"), "set adaptive or concurrency")
            layers = {k: fields.pop(k) for k in stack_options() if k in fields}
            try:
                stack = replace(SERVE_STACK, **layers)
            except (TypeError, ValueError) as exc:
                raise reader.fail(("models", name), str(exc)) from None
            models[name] = ModelConfig(name, **fields, stack=stack)
        for name, m in models.items():
            for fb in m.stack.fallbacks:
                if fb not in models or fb == name:
                    raise reader.fail(("models", name, "fallbacks"),
                                      f"{fb!r} is not another model of this file")
        no_cycle(reader, {n: m.stack.fallbacks for n, m in models.items()})
    tenants = {}
    for name, table in (data.get("tenants") or {}).items():
        fields = reader.section(("tenants", name), table, TENANT_KEYS, RENAMES)
        if not fields.get("key_hashes") and not fields.get("api_key_env"):
            raise reader.fail(("tenants", name), "needs api_key_sha256 or api_key_env")
        for model in fields.get("models", ()):
            if model not in models:
                raise reader.fail(("tenants", name, "models"), f"no model named {model!r}")
        t = TenantConfig(name, **fields)
        _priced(t, models, reader)
        if t.max_priority and PRIORITIES[t.max_priority] < PRIORITIES[t.priority]:
            raise reader.fail(("tenants", name, "max_priority"), "is below its priority")
        tenants[name] = t
    if jobs.default_model is not None and jobs.default_model not in models:
        raise reader.fail(("jobs", "default_model"), f"no model named {jobs.default_model!r}")
    return ServeConfig(models, tenants, source=reader.source, jobs=jobs, **server)


def _priced(tenant: TenantConfig, models: dict[str, ModelConfig], reader: Reader) -> None:
    """A tenant with a budget may only use priced models: an unpriced one would be free."""
    if tenant.max_budget is None:
        if tenant.budget_duration is not None:
            raise reader.fail(("tenants", tenant.name, "budget_duration"),
                              "resets max_budget: set max_budget too")
        return
    for name in tenant.models or models:
        if not (models[name].price_input or models[name].price_output):
            raise reader.fail(("tenants", tenant.name, "max_budget"),
                              f"model {name!r} has no price, so its calls would be free of the "
                              f"budget; set price_input and price_output (USD per million "
                              f"tokens) in [models.{name}], or limit the tenant's models")
