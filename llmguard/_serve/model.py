"""One configured gateway model at run time: its upstream(s) and its handlers.

A model of one upstream has ``upstreams[""]``; a model with ``[[models.NAME.deployments]]`` one
upstream per deployment, chosen per attempt by its Router (the choice travels in the request
as :data:`~llmguard._upstream.deployments.DEPLOYMENT`, taken out before the request goes upstream).
"""

from __future__ import annotations

from typing import Any

import llmguard as lg

from .._upstream.attempt_timeout import Aheads
from .._upstream.config import upstream_of
from .._upstream.deployments import DEPLOYMENT
from .._upstream.protocol import Upstream
from .._upstream.select import terminal
from .config import ModelConfig

__all__ = ["Model"]


class Model:
    """One configured model at run time: its upstream(s) and its handlers."""

    __slots__ = ("aheads", "chat", "config", "embed", "guarded", "layers", "name", "target",
                 "upstreams")

    def __init__(self, config: ModelConfig) -> None:
        self.config, self.name = config, config.name
        #: What the upstream is asked for (a deployment may name its own model).
        self.target = config.model or config.name
        #: Deployment name ("" for a model of one upstream) -> (upstream, the model it is asked
        #: for).
        timeout = config.stack.timeout
        bounded = timeout is not None  # the terminal bounds each attempt (``aheads``)
        self.upstreams: dict[str, tuple[Upstream, str]] = (
            {d.name: (upstream_of(d, bounded=bounded or d.timeout is not None),
                      d.model or config.name)
             for d in config.deployments}
            if config.deployments else {"": (upstream_of(config, bounded=bounded), self.target)})
        #: The model's ``timeout`` (or its deployment's, where shorter) per attempt, from its
        #: send or, while an upstream answers ours sent before it (a proxy's queue moving),
        #: from the last of those: in the terminal, not a Timeout layer (from the send alone).
        self.aheads = Aheads(timeout, deployments=config.deployments)
        self.chat: Any = None  # handler: TenantGate + the model's layers + the upstream
        self.embed: Any = None
        self.guarded: Any = None  # the model's layers around its upstream (a fallback target)
        self.layers: tuple[Any, ...] = ()  # the model's layers (its stack), outermost first

    @property
    def upstream(self) -> Upstream:
        """The upstream of a model of one upstream (the first deployment's otherwise)."""
        return next(iter(self.upstreams.values()))[0]

    @upstream.setter
    def upstream(self, upstream: Upstream) -> None:
        key, (_, target) = next(iter(self.upstreams.items()))
        self.upstreams[key] = (upstream, target)

    def terminal(self, *, embed: bool = False) -> Any:
        """The innermost handler: to the upstream of the deployment the Router chose (the only
        one without a Router), as what it is asked for (a fallback arrives named as the
        primary). The upstream is looked up per call, so it can be replaced at run time."""
        sends: dict[int, tuple[Upstream, Any]] = {}

        def as_this_model(call: lg.Call) -> Any:
            kwargs = call.kwargs
            choice = kwargs.get(DEPLOYMENT)
            upstream, target = (self.upstreams[choice] if choice is not None
                                else self.upstreams.get("") or next(iter(self.upstreams.values())))
            if DEPLOYMENT in kwargs or kwargs.get("model") != target:
                kwargs = {k: v for k, v in kwargs.items() if k != DEPLOYMENT}
                kwargs["model"] = target
                call.kwargs = kwargs  # the caller's dict is untouched
            known = sends.get(id(upstream))
            if known is None or known[0] is not upstream:
                known = sends[id(upstream)] = (upstream, terminal(
                    upstream, embed=embed, ahead=self.aheads(upstream, choice)))
            return known[1](call)

        return as_this_model

    async def send(self, **request: Any) -> Any:
        """One request to the upstream as this model, without layers: the function the model's
        pipelines guard (what its cache keys name)."""
        return await self.terminal()(lg.Call(self.send, (), request))
