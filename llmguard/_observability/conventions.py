"""Names, units and bucket boundaries from the OpenTelemetry GenAI semantic conventions, and the
``error.type`` of an exception.

The boundaries are the ``ExplicitBucketBoundaries`` the GenAI metrics page gives for each client
histogram (the semconv Python package carries names, not boundaries).
"""

from __future__ import annotations

__all__ = ["CHUNK_BUCKETS", "CIRCUIT_STATES", "DURATION_BUCKETS", "FIRST_CHUNK_BUCKETS",
           "SCOPE", "TOKEN_BUCKETS", "error_leaf", "error_type"]

#: Advisory boundaries for ``gen_ai.client.operation.duration`` (s).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
#: Advisory boundaries for ``gen_ai.client.token.usage`` ({token}).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
#: The client-side stream timings (``time_to_first_chunk``, ``time_per_output_chunk``) use the
#: same boundaries as the duration: the spec gives these for the client metrics (the server-side
#: ``time_to_first_token`` boundaries measure a server's queue, not a client's round trip).
FIRST_CHUNK_BUCKETS = DURATION_BUCKETS
CHUNK_BUCKETS = DURATION_BUCKETS

#: Instrumentation scope of every meter and tracer llmguard creates.
SCOPE = "llmguard"

#: Circuit states as numbers for a gauge (0 closed, 1 half-open, 2 open).
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def error_leaf(exc: BaseException) -> BaseException:
    """The error that ended the call: for a ``FallbackExhausted`` (an exception group of every
    alternate's error), the last alternate's error, recursively; else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[-1]
    return exc


def error_type(exc: BaseException) -> str:
    """The ``error.type`` attribute: the qualified class name of the error that ended the call
    (``llmguard.QueueFull``, ``openai.RateLimitError``; a builtin keeps its bare name)."""
    cls = type(error_leaf(exc))
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
