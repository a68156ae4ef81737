"""``Deployment(timeout=)`` as the Timeout layer: its clock starts when the attempt is sent
(README, "Time budgets"), so time queued in the layers below the Router (a ConcurrencyLimit, a
RateLimit) never expires a request, nor moves it to another deployment unsent."""

from __future__ import annotations

from .._resilience.timeout import Timeout

__all__ = ["DeploymentTimeout"]


class DeploymentTimeout(Timeout):
    """A deployment's ``timeout``: a :class:`~llmguard.Timeout` of its own (inside its circuit,
    as Timeout sits below CircuitBreaker in the recommended order), whose errors name the
    deployment's setting."""

    __slots__ = ("deployment",)

    def __init__(self, seconds: float, deployment: str) -> None:
        super().__init__(seconds)
        #: The name of the deployment it bounds.
        self.deployment = deployment

    def _setting(self, name: str) -> str:
        return f"Deployment(name={self.deployment!r}, timeout={self.seconds:g})"
