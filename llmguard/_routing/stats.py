"""What :meth:`Router.statistics` returns: the router's counters and one entry per deployment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .._core.public import public
from .._core.stats import LayerStats

__all__ = ["DeploymentStats", "RouterStats", "deployment_stats", "loop_time"]


@public
@dataclass(frozen=True, slots=True)
class DeploymentStats(LayerStats):
    """A snapshot of one deployment of a :class:`llmguard.Router`."""

    name: str
    #: Calls at this deployment now (this process).
    in_flight: int
    #: Attempts sent here, and how they ended (a move to another deployment counts as failed).
    sent: int
    succeeded: int
    failed: int
    #: 429s it answered (each cooled it down per its Retry-After).
    rate_limited: int
    #: Attempts that moved from here to another deployment after failing here.
    moved_away: int
    #: Headroom now (0 for a quota it does not have or has not learned).
    requests_available: int
    tokens_available: int
    #: Seconds until it takes calls again after a 429 (0.0 when it is not cooling down).
    cooling_for: float
    #: Its circuit's state (``"closed"``, ``"open"``, ``"half_open"``), or None without one.
    circuit: str | None
    #: Average seconds an answer took here (None before the first).
    latency: float | None
    #: Whether its quotas are known (given, or learned from its headers).
    quotas_known: bool
    #: Seconds each of its windows counts past the server's, for the time a request takes to
    #: get there (``margin=`` given, else measured as RateLimit's; None until quotas are known).
    margin: float | None = None


@public
@dataclass(frozen=True, slots=True)
class RouterStats(LayerStats):
    """A snapshot of a :class:`llmguard.Router`."""

    calls: int
    in_flight: int
    #: Calls waiting for room at any deployment now.
    waiting: int
    #: Attempts moved to another deployment after a 429, 5xx, timeout or open circuit.
    failovers: int
    #: Calls that failed at every deployment they could go to.
    exhausted: int
    #: Calls refused: RequestTooLarge (no deployment can ever take them) and AdmissionTimeout.
    rejected: int
    timed_out: int
    #: One entry per deployment, by name, in the order given.
    deployments: dict[str, DeploymentStats]


def loop_time() -> float:
    """The running loop's time (0.0 outside one: statistics read from synchronous code)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0


def deployment_stats(deployment: Any, now: float) -> DeploymentStats:
    """A :class:`DeploymentStats` of ``deployment`` at loop time ``now``."""
    requests = tokens = 0
    cooling = max(0.0, deployment.cool_until - now)
    if deployment.quotas is not None:
        requests, tokens, paused = deployment.backend.headroom(deployment.key, deployment.quotas)
        cooling = max(cooling, paused)
    circuit = deployment.circuit
    return DeploymentStats(
        deployment.name, deployment.in_flight, deployment.sent, deployment.succeeded,
        deployment.failed, deployment.rate_limited, deployment.moved, requests, tokens, cooling,
        circuit.state.value if circuit else None, deployment.latency,
        deployment.quotas is not None,
        None if deployment.quota_margin is None else deployment.quota_margin.seconds)
