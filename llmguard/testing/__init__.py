"""Public test doubles: run pipelines offline, under virtual time, against realistic providers.

``FakeLLM`` is a scriptable chat model; ``SimulatedProvider`` models a provider's capacity,
queueing latency and strict RPM/TPM quotas.
"""

from ._fake import FakeLLM
from ._provider import Overloaded, ProviderError, ProviderStats, RateLimited, SimulatedProvider

__all__ = [
    "FakeLLM",
    "Overloaded",
    "ProviderError",
    "ProviderStats",
    "RateLimited",
    "SimulatedProvider",
]
