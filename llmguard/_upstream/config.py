"""Where a configured model's requests go: :class:`UpstreamConfig`, the upstream fields a
gateway model (``[models.NAME]``) and a deployment (``[[...deployments]]``, also ``llmguard run
--config``'s) share, their TOML keys, and :func:`upstream_of`, the upstream they describe."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._core.config_file import integer, number, one_of, string
from .protocol import Upstream
from .select import make_upstream

__all__ = ["PROVIDERS", "UPSTREAM_KEYS", "UpstreamConfig", "upstream_of"]

PROVIDERS = ("fake", "litellm", "openai")

#: Where a model or a deployment goes (:class:`UpstreamConfig`'s fields): each TOML key and the
#: check that converts its value.
UPSTREAM_KEYS = {
    "provider": one_of(*PROVIDERS), "model": string, "base_url": string, "api_key_env": string,
    "latency": number(False), "seconds_per_token": number(False), "fail_status": integer(400, 599),
}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream: its provider (``"fake"``, ``"litellm"``, ``"openai"`` with ``base_url``),
    the model it is asked for, the variable holding its key; the fake's latency and failure."""

    name: str
    provider: str = "fake"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    latency: float = 0.01
    seconds_per_token: float = 0.0005
    fail_status: int | None = None


def upstream_of(cfg: UpstreamConfig, api_key: str | None = None, *,
                bounded: bool = False) -> Upstream:
    """Where ``cfg``'s requests go, with ``api_key`` (when resolved elsewhere: a Ray driver's),
    else the key read from ``api_key_env`` here; ``bounded``: every request's time is bounded
    by the caller (a Timeout layer), so the transport keeps no timer of its own."""
    key = api_key or (os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)
    if cfg.provider == "fake":
        return make_upstream("fake", name=cfg.name, latency=cfg.latency,
                             seconds_per_token=cfg.seconds_per_token,
                             fail_status=cfg.fail_status, model=cfg.model)
    return make_upstream(cfg.provider, name=cfg.name, base_url=cfg.base_url, api_key=key or None,
                         bounded=bounded)
