"""A gateway model served by several deployments: ``[[models.NAME.deployments]]`` read from
the config, and the :class:`llmguard.Router` the gateway builds from them (each deployment its
own upstream and quotas; the request names the deployment the Router chose, ``Model.send``
sends it there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llmguard as lg

from .config_parse import DEPLOYMENT_KEYS, PER_DEPLOYMENT, Reader

__all__ = ["DEPLOYMENT", "DeploymentConfig", "parse_deployments", "router_of"]

#: The request key the Router's choice travels in, from its dict target to ``Model.send``
#: (which takes it out before the request goes upstream).
DEPLOYMENT = "llmguard_deployment"


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """One deployment of a model: its upstream and its own quotas."""

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
    concurrency: int | None = None
    weight: float = 1.0
    timeout: float | None = None
    #: As RateLimit's: "auto" (the server's shape learned), "window" or "continuous".
    refill: str = "auto"



def parse_deployments(name: str, table: Any, reader: Reader) -> tuple[DeploymentConfig, ...]:
    """``[[models.NAME.deployments]]``, taken out of ``table``; each checked, names unique."""
    if not isinstance(table, dict) or "deployments" not in table:
        return ()
    raw = table.pop("deployments")
    path = ("models", name, "deployments")
    if not isinstance(raw, list) or not raw:
        raise reader.fail(path, "must be one or more [[models.NAME.deployments]] tables")
    shared = sorted(set(table) & set(PER_DEPLOYMENT))
    if shared:
        raise reader.fail(("models", name, shared[0]),
                          "goes in each [[models.NAME.deployments]] table of this model")
    found: dict[str, DeploymentConfig] = {}
    for i, entry in enumerate(raw):
        fields = reader.section((*path, str(i)), entry, DEPLOYMENT_KEYS)
        if "name" not in fields:
            raise reader.fail((*path, str(i)), "needs a name (unique within the model)")
        if fields["name"] in found:
            raise reader.fail((*path, str(i), "name"), f"{fields['name']!r} is used twice")
        if fields.setdefault("provider", "fake") == "openai" and "base_url" not in fields:
            raise reader.fail((*path, str(i)), 'provider = "openai" needs base_url')
        found[fields["name"]] = DeploymentConfig(**fields)
    return tuple(found.values())



def router_of(deployments: tuple[DeploymentConfig, ...], strategy: str, max_wait: float,
              backend: Any) -> lg.Router:
    """The Router over a model's deployments (quotas shared through ``backend`` if given)."""
    return lg.Router(*(lg.Deployment({DEPLOYMENT: d.name}, name=d.name, rpm=d.rpm, tpm=d.tpm,
                                     concurrency=d.concurrency, weight=d.weight,
                                     timeout=d.timeout, refill=d.refill)
                       for d in deployments),
                     strategy=strategy, max_wait=max_wait, backend=backend)
