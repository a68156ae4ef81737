"""Public test doubles: run pipelines offline, under virtual time, against realistic providers.

``FakeLLM`` is a scriptable chat model; ``SimulatedProvider`` models a provider's capacity,
queueing latency and strict RPM/TPM quotas; ``FixedWindowServer`` and ``TokenBucketServer`` are
providers shaped like real rate limiters (clock-minute windows counted at arrival; continuously
refilling buckets charging ``max_tokens`` up front) that record every arrival and cancellation;
``InputOutputBucketServer`` is Anthropic's limiter (input, output and request buckets, output
charged as ``max_tokens`` then adjusted to the output used, ``anthropic-ratelimit-*`` headers);
``SlidingWindowServer`` and ``ProxyWindowServer`` (LiteLLM's proxy: ``rpm - 1`` per wall-clock
minute, no reset header, ``llm_provider-retry-after: 60``) complete the shapes;
``LoopbackServer`` serves any of them over HTTP as an OpenAI-compatible endpoint;
``Faults`` is a layer that injects every kind of provider failure, seeded; ``BatchAPIServer``
simulates OpenAI's Batch API and Anthropic's Message Batches over HTTP;
``virtual_wall_clock`` makes the wall clock (clock minutes, reset dates) follow virtual time;
``cold_start`` is a server's ``send_latency`` slow for the opening burst (a cold network).
"""

from .._upstream.fake_llm import FakeLLM
from ._anthropic import InputOutputBucketServer
from ._batch_server import BatchAPIServer
from ._batch_state import BatchTimings
from ._clock import DEFAULT_EPOCH, virtual_wall_clock
from ._faults import Faults, FaultStats, make_error
from ._http import LoopbackServer
from ._network import cold_start
from ._provider import Overloaded, ProviderError, ProviderStats, RateLimited, SimulatedProvider
from ._quota import FixedWindow, TokenBucket
from ._servers import Arrival, QuotaServer, ServerStats
from ._shapes import FixedWindowServer, ProxyWindowServer, SlidingWindowServer, TokenBucketServer

__all__ = [
    "Arrival",
    "BatchAPIServer",
    "BatchTimings",
    "DEFAULT_EPOCH",
    "FakeLLM",
    "FaultStats",
    "Faults",
    "FixedWindow",
    "FixedWindowServer",
    "InputOutputBucketServer",
    "LoopbackServer",
    "Overloaded",
    "ProviderError",
    "ProviderStats",
    "ProxyWindowServer",
    "QuotaServer",
    "RateLimited",
    "ServerStats",
    "SimulatedProvider",
    "SlidingWindowServer",
    "TokenBucket",
    "TokenBucketServer",
    "cold_start",
    "make_error",
    "virtual_wall_clock",
]
