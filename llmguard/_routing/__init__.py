"""Routing one model over several deployments: ``Deployment`` (a target, its quotas, circuit
and statistics), the strategies that order them, the waiting line across them and the
``Router`` layer."""

from .deployment import Deployment
from .layer import Router
from .stats import DeploymentStats, RouterStats

__all__ = ["Deployment", "DeploymentStats", "Router", "RouterStats"]
