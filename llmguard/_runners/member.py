"""A member of an :class:`~llmguard.AgentPool`: its counters, its own circuit, its snapshot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core.public import public
from .._core.stats import LayerStats
from .._resilience.circuit_state import CircuitState

__all__ = ["Member", "MemberStats", "PoolStats"]


@public
@dataclass(frozen=True, slots=True)
class MemberStats(LayerStats):
    name: str
    #: Calls in progress, calls finished, of which failed.
    busy: int
    calls: int
    failures: int
    #: "closed" (in service), "open" (cooling down) or "half_open" (probing).
    state: str
    #: Mean latency of finished calls, seconds (0 before the first).
    mean_latency: float


@public
@dataclass(frozen=True, slots=True)
class PoolStats(LayerStats):
    members: tuple[MemberStats, ...]
    #: Callers waiting for a free member.
    waiting: int


class Member:
    """One pool member: what it runs, what it is doing, and its circuit."""

    __slots__ = ("target", "fn", "name", "weight", "busy", "calls", "failures", "latency",
                 "circuit", "current")

    def __init__(self, target: Any, fn: Callable[..., Any], name: str, weight: float,
                 cooldown: float) -> None:
        self.target, self.fn, self.name, self.weight = target, fn, name, weight
        self.busy = self.calls = self.failures = 0
        self.latency = 0.0
        self.current = 0.0  # smooth weighted round robin credit
        # 3 retryable failures in 5+ calls within 60 s open it; one successful probe closes it.
        self.circuit = CircuitState(failure_ratio=0.5, min_calls=3, window=60, open_for=cooldown,
                                    half_open_calls=1)

    def usable(self, now: float, per_member: int) -> bool:
        return self.busy < per_member and self.circuit.would_allow(now)
