"""Public test doubles: run pipelines offline, under virtual time, against realistic providers.

``FakeLLM`` is a scriptable chat model; ``SimulatedProvider`` models a provider's capacity,
queueing latency and strict RPM/TPM quotas;
``Faults`` is a layer that injects every kind of provider failure, seeded.
"""

from ._fake import FakeLLM
from ._faults import Faults, FaultStats, make_error
from ._provider import Overloaded, ProviderError, ProviderStats, RateLimited, SimulatedProvider

__all__ = [
    "FakeLLM",
    "FaultStats",
    "Faults",
    "Overloaded",
    "ProviderError",
    "ProviderStats",
    "RateLimited",
    "SimulatedProvider",
    "make_error",
]
