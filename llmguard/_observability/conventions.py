"""Names, units and bucket boundaries from the OpenTelemetry GenAI semantic conventions, and the
``error.type`` of an exception.

The boundaries are the ``ExplicitBucketBoundaries`` the GenAI metrics page gives for each client
histogram (the semconv Python package carries names, not boundaries).
"""

from __future__ import annotations

__all__ = ["CHUNK_BUCKETS", "CIRCUIT_STATES", "DURATION_BUCKETS", "FIRST_CHUNK_BUCKETS",
           "PROVIDER_PREFIXES", "SCOPE", "TOKEN_BUCKETS", "UNKNOWN_PROVIDER", "error_leaf",
           "error_type", "provider_name"]

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

#: ``gen_ai.provider.name`` (required by the conventions) when neither the call (an
#: integration) nor the layer (``Metrics(provider=...)``) names the provider and the model has
#: no ``provider/`` prefix to tell it: the conventions ask for the instrumentation's best
#: knowledge, and this is all there is.
UNKNOWN_PROVIDER = "unknown"

#: litellm's ``provider/model`` prefixes -> the conventions' well-known provider names.
PROVIDER_PREFIXES = {
    "openai": "openai", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic", "bedrock": "aws.bedrock", "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini", "cohere": "cohere", "groq": "groq", "mistral": "mistral_ai",
    "deepseek": "deepseek", "xai": "x_ai", "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
}


def provider_name(model: str | None) -> str:
    """The provider a ``provider/model`` name says (litellm's convention), else ``unknown``."""
    if model and "/" in model:
        return PROVIDER_PREFIXES.get(model.split("/", 1)[0], UNKNOWN_PROVIDER)
    return UNKNOWN_PROVIDER


#: Circuit states as numbers for a gauge (0 closed, 1 half-open, 2 open).
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def error_leaf(exc: BaseException) -> BaseException:
    """The error that ended the call: for a ``FallbackExhausted`` (an exception group of every
    alternate's error), the last alternate's error, recursively; else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[-1]
    return exc


_public_names: dict[type, str] = {}


def error_type(exc: BaseException) -> str:
    """The ``error.type`` attribute: the public name of the error that ended the call's class
    (``llmguard.QueueFull``, ``openai.RateLimitError``, ``httpx.ReadTimeout``; a builtin keeps
    its bare name), never a private module path (``openai._exceptions``): for a class defined
    in a private module, the shortest public module of its package (no ``_``-prefixed part)
    that exposes it under its name, else the bare class name."""
    cls = type(error_leaf(exc))
    name = _public_names.get(cls)
    if name is None:
        name = _public_names[cls] = _public_name(cls)
        if len(_public_names) > 1024:  # classes made on the fly must not grow it for ever
            _public_names.clear()
    return name


def _public_name(cls: type) -> str:
    import sys

    module, qualname = cls.__module__, cls.__qualname__
    if module == "builtins" or "<locals>" in qualname:
        return cls.__name__
    parts = module.split(".")
    if not any(part.startswith("_") for part in parts):
        return f"{module}.{qualname}"
    # Defined in a private module: the shortest public module of the same package that exposes
    # it under its name (``llmguard.testing.ProviderError``, ``openai.RateLimitError``).
    public = sorted((name for name in list(sys.modules) if name == parts[0]
                     or (name.startswith(parts[0] + ".")
                         and not any(p.startswith("_") for p in name.split(".")))),
                    key=lambda name: (name.count("."), name))
    for name in public:
        found: object = sys.modules.get(name)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is cls:
            return f"{name}.{qualname}"
    return qualname
