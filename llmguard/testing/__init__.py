"""Public test doubles: run pipelines offline, under virtual time, against realistic providers.

``FakeLLM`` is a scriptable chat model; ``SimulatedProvider`` (see its module) models a provider
with capacity, quotas and queueing.
"""

from ._fake import FakeLLM

__all__ = ["FakeLLM"]
