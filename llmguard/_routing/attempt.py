"""One attempt at one deployment: sending it (through the deployment's circuit), which failures
move an attempt elsewhere, and the events its circuit's transitions raise."""

from __future__ import annotations

from typing import Any

from .._core import events
from .._core.call import Call
from .._core.classify import FailureKind, classify
from .._core.errors import AdmissionError
from .._core.events import EventKind
from .._core.layer import Handler
from .._resilience.circuit import CircuitBreaker
from .deployment import Deployment
from .target import to_target

__all__ = ["default_circuit", "moves", "publish_circuit", "send"]

#: Failures that move an attempt to another deployment (the deployment's trouble, not the
#: request's); an open circuit too.
_MOVES = frozenset({FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.SERVER_ERROR,
                    FailureKind.TIMEOUT, FailureKind.CONNECTION, FailureKind.QUOTA_EXHAUSTED})


def moves(exc: Exception) -> bool:
    """True when ``exc`` says the deployment (not the request) is in trouble: try another."""
    if isinstance(exc, AdmissionError):  # the deployment's circuit refused it
        return type(exc).__name__ == "CircuitOpenError"
    return classify(exc).kind in _MOVES


async def send(deployment: Deployment, call: Call, call_next: Handler) -> Any:
    """The attempt at ``deployment``, through its circuit, then its timeout (timed from the
    send: a timeout counts as the deployment's failure, time queued below never counts)."""
    circuit, timed = deployment.circuit, deployment.timed

    async def send(call: Call) -> Any:
        return await to_target(deployment.target, call, call_next)

    async def bounded(call: Call) -> Any:
        return await timed(call, send)

    attempt = send if timed is None else bounded
    return await (circuit(call, attempt) if circuit else attempt(call))


def default_circuit(name: str, backend: Any) -> Any:
    """A deployment's default circuit (shared through ``backend`` when it can share one)."""
    shared = backend if callable(getattr(backend, "circuit_state", None)) else None
    return CircuitBreaker(failure_ratio=0.5, min_calls=5, window=30, open_for=10,
                          half_open_calls=1, name=name, backend=shared)


def publish_circuit(call: Call, deployment: Deployment, before: Any) -> None:
    """Publish the deployment's circuit opening (cooldown) or closing (recovery)."""
    circuit = deployment.circuit
    if not circuit or circuit.state is before or not events.subscribers:
        return
    state = circuit.state.value
    if state == "open":
        call.emit(EventKind.DEPLOYMENT_COOLDOWN, "router", detail=deployment.name,
                  delay=circuit.statistics().retry_after)
    elif state == "closed":
        call.emit(EventKind.DEPLOYMENT_RECOVERED, "router", detail=deployment.name)
