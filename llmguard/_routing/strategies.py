"""Strategies: the order in which a router offers an attempt to its deployments.

Each is a pure function of the deployments (and a random source), tested directly. The first
deployment in the order that admits the call (a reservation on its quotas) takes it, so a
strategy only decides preference: none can send a deployment more than its quota.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["STRATEGIES", "check_strategy"]

Order = Callable[[Sequence[Any], random.Random], list[Any]]


def headroom(deployments: Sequence[Any], rng: random.Random) -> list[Any]:
    """Most free quota first (free fraction of the tightest quota, times ``weight``); ties in
    the order given."""
    scored = [(-d.headroom() * d.weight, i, d) for i, d in enumerate(deployments)]
    scored.sort(key=lambda item: item[:2])
    return [d for _, _, d in scored]


def weighted(deployments: Sequence[Any], rng: random.Random) -> list[Any]:
    """A random order drawn by ``weight`` (Efraimidis-Spirakis: each keyed ``u ** (1/w)``), so
    each deployment comes first in proportion to its weight."""
    keyed = [(rng.random() ** (1.0 / d.weight), i, d) for i, d in enumerate(deployments)]
    keyed.sort(key=lambda item: (-item[0], item[1]))
    return [d for _, _, d in keyed]


def least_latency(deployments: Sequence[Any], rng: random.Random) -> list[Any]:
    """Fastest average answer first; a deployment with no answer yet first of all (so each
    gets measured)."""
    return sorted(deployments, key=lambda d: -1.0 if d.latency is None else d.latency)


def ordered(deployments: Sequence[Any], rng: random.Random) -> list[Any]:
    """As given: the first is the primary, the rest take only its overflow."""
    return list(deployments)


STRATEGIES: dict[str, tuple[Order, str]] = {
    "headroom": (headroom, "the deployment with the most free quota"),
    "weighted": (weighted, "random, in proportion to each deployment's weight"),
    "least_latency": (least_latency, "the fastest deployment"),
    "ordered": (ordered, "the first with room, in the order given (primary, then overflow)"),
}


def check_strategy(strategy: Any) -> Order:
    """The order function of ``strategy``, or a ValueError naming each choice."""
    found = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
    if found is None:
        choices = "; ".join(f"{name!r}: {why}" for name, (_, why) in STRATEGIES.items())
        raise ValueError(f"strategy must be one of {choices}; got {strategy!r}")
    return found[0]
