"""Deployments read from TOML: a gateway model's ``[[models.NAME.deployments]]`` and the
``[[deployments]]`` of ``llmguard run --config``, one schema and one parser for both, and the
:class:`llmguard.Router` built from them (each deployment its own upstream and quotas; the
request names the deployment the Router chose, the application's terminal sends it there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.config_file import ConfigError, Reader, integer, number, one_of, read_toml, string
from .config import UPSTREAM_KEYS, UpstreamConfig

if TYPE_CHECKING:  # imported when a router is built: a run without deployments never loads it
    from .._routing.layer import Router

__all__ = ["DEPLOYMENT", "DEPLOYMENT_KEYS", "PER_DEPLOYMENT", "DeploymentConfig",
           "load_deployments", "model_deployments", "parse_deployments", "router_of"]

#: The request key the Router's choice travels in, from its dict target to the terminal
#: handler (which takes it out before the request goes upstream).
DEPLOYMENT = "llmguard_deployment"

#: ``[[models.NAME.deployments]]`` and ``[[deployments]]``: one upstream of the model, with its
#: own quotas (the Router): each TOML key and the check that converts its value.
DEPLOYMENT_KEYS = {
    "name": string, **UPSTREAM_KEYS, "rpm": integer(), "tpm": integer(),
    "input_tpm": integer(), "output_tpm": integer(),
    "concurrency": integer(), "weight": number(), "timeout": number(),
    "refill": one_of("auto", "window", "continuous"), "burst": number(), "margin": number(False),
}
#: A gateway model's keys that belong to each deployment once the model has ``deployments``.
PER_DEPLOYMENT = (*UPSTREAM_KEYS, "rpm", "tpm", "input_tpm", "output_tpm", "refill", "burst",
                  "margin")


@dataclass(frozen=True, slots=True)
class DeploymentConfig(UpstreamConfig):
    """One deployment of a model: its upstream (:class:`UpstreamConfig`) and its own quotas."""

    rpm: int | None = None
    tpm: int | None = None
    #: Input and output tokens per minute apart (Anthropic's ITPM/OTPM).
    input_tpm: int | None = None
    output_tpm: int | None = None
    concurrency: int | None = None
    weight: float = 1.0
    timeout: float | None = None
    #: As RateLimit's: "auto" (the server's shape learned), "window" or "continuous".
    refill: str = "auto"
    #: As RateLimit's: also hold that fraction of each quota over as much of its minute, and
    #: seconds added to each window (None: RateLimit's default).
    burst: float | None = None
    margin: float | None = None


def parse_deployments(raw: Any, path: tuple[str, ...],
                      reader: Reader) -> tuple[DeploymentConfig, ...]:
    """The array of tables ``raw`` found at ``path``: each checked, names unique."""
    header = "[[" + ".".join(path) + "]]"
    if not isinstance(raw, list) or not raw:
        raise reader.fail(path, f"must be one or more {header} tables")
    found: dict[str, DeploymentConfig] = {}
    for i, entry in enumerate(raw):
        fields = reader.section((*path, str(i)), entry, DEPLOYMENT_KEYS)
        if "name" not in fields:
            raise reader.fail((*path, str(i)), "needs a name (unique within the model)")
        if fields["name"] in found:
            raise reader.fail((*path, str(i), "name"), f"{fields['name']!r} is used twice")
        if fields.setdefault("provider", "fake") == "openai" and "base_url" not in fields:
            raise reader.fail((*path, str(i)), 'provider = "openai" needs base_url')
        if fields["provider"] != "fake" and "fail_status" in fields:
            raise reader.fail((*path, str(i), "fail_status"), "only for the fake provider")
        if "burst" in fields and not {"rpm", "tpm", "input_tpm", "output_tpm"} & set(fields):
            raise reader.fail((*path, str(i), "burst"), "shapes rpm/tpm: set one of them too")
        found[fields["name"]] = DeploymentConfig(**fields)
    return tuple(found.values())


def model_deployments(name: str, table: Any, reader: Reader) -> tuple[DeploymentConfig, ...]:
    """``[[models.NAME.deployments]]``, taken out of the model's ``table`` (none: ``()``)."""
    if not isinstance(table, dict) or "deployments" not in table:
        return ()
    raw = table.pop("deployments")
    shared = sorted(set(table) & set(PER_DEPLOYMENT))
    if shared:
        raise reader.fail(("models", name, shared[0]),
                          "goes in each [[models.NAME.deployments]] table of this model")
    return parse_deployments(raw, ("models", name, "deployments"), reader)


def load_deployments(path: str) -> tuple[DeploymentConfig, ...]:
    """The ``[[deployments]]`` of the TOML file at ``path`` (``llmguard run --config``); raises
    :class:`ConfigError` naming the key and its line."""
    data, reader = read_toml(path)
    unknown = sorted(set(data) - {"deployments"})
    if unknown:
        raise reader.fail((unknown[0],), "unknown key; this file holds [[deployments]] tables "
                                         "only (the other options are command-line flags)")
    if "deployments" not in data:
        raise ConfigError(f"{path}: no [[deployments]] table; add one per deployment, each "
                          'with a name (and provider = "openai", base_url, api_key_env, rpm...)')
    return parse_deployments(data["deployments"], ("deployments",), reader)


def router_of(deployments: tuple[DeploymentConfig, ...], strategy: str, max_wait: float | None,
              backend: Any) -> Router:
    """The Router over ``deployments`` (quotas shared through ``backend`` if given), each a
    dict target naming it under :data:`DEPLOYMENT`. A deployment's ``timeout`` is not the
    Router's (timed from the send, it would still expire attempts waiting in an upstream's own
    queue, LiteLLM's proxy's): the application's terminal, which sends the request, applies
    it per attempt (:mod:`.attempt_timeout`), and a timeout there moves the attempt on as the
    Router's would."""
    from .._routing.deployment import Deployment
    from .._routing.layer import Router

    return Router(*(Deployment({DEPLOYMENT: d.name}, name=d.name, rpm=d.rpm, tpm=d.tpm,
                               input_tpm=d.input_tpm, output_tpm=d.output_tpm,
                               concurrency=d.concurrency, weight=d.weight,
                               refill=d.refill, burst=d.burst, margin=d.margin)
                    for d in deployments),
                  strategy=strategy, max_wait=max_wait, backend=backend)
