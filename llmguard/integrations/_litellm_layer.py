"""The innermost layer of a guarded litellm function: arguments in, usage, cost, provider and
rate-limit headers out (for plain answers and streams alike)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .._core.call import Call
from .._core.layer import Handler
from .._core.stream import Stream, is_stream_result
from .._core.tokens import extract_usage
from .._upstream.litellm import NO_RETRIES, rate_headers

__all__ = ["NO_RETRIES", "LiteLLMLayer", "LiteLLMStats", "litellm_module", "send", "server_of"]

#: litellm's provider names -> the GenAI conventions' ``gen_ai.provider.name`` values.
PROVIDERS = {
    "openai": "openai", "text-completion-openai": "openai", "anthropic": "anthropic",
    "bedrock": "aws.bedrock", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference",
    "vertex_ai": "gcp.vertex_ai", "vertex_ai_beta": "gcp.vertex_ai", "gemini": "gcp.gemini",
    "cohere": "cohere", "cohere_chat": "cohere", "mistral": "mistral_ai", "groq": "groq",
    "deepseek": "deepseek", "xai": "x_ai", "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai", "moonshot": "moonshot_ai",
}


def litellm_module() -> Any:
    import litellm

    return litellm


def server_of(api_base: Any) -> tuple[str, int | None] | None:
    if not isinstance(api_base, str) or not api_base:
        return None
    parts = urlsplit(api_base if "//" in api_base else f"//{api_base}")
    if not parts.hostname:
        return None
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.hostname, port


@dataclass(frozen=True, slots=True)
class LiteLLMStats:
    """Calls, tokens and spend seen by a guarded litellm function (every attempt counts)."""

    calls: int
    failures: int
    input_tokens: int
    output_tokens: int
    #: Total cost in USD from litellm's cost map.
    cost_usd: float
    #: Successful calls whose model litellm's cost map does not price (cost counted as 0).
    uncosted: int
    #: USD per model name as litellm reported it.
    cost_by_model: MappingProxyType[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Calls refused before sending because the prompt exceeds the model's context window.
    context_refusals: int = 0


class LiteLLMLayer:
    """Innermost layer: litellm arguments in, usage and cost out.

    Innermost so that it sees the arguments each attempt really sends (after a Fallback's
    ``{"model": ...}`` override) and counts every attempt's spend, the failed ones included.
    """

    __slots__ = ("_overrides", "_check", "_operation", "_providers", "_calls",
                 "_failures", "_input", "_output", "_cost", "_uncosted", "_by_model",
                 "refusals")
    __name__ = "litellm"  # its key in Guarded.stats()

    def __init__(self, *, no_retries: bool, check: Any, operation: str) -> None:
        self._overrides = NO_RETRIES if no_retries else None
        self._check = check  # refuses an oversized prompt before sending, or None
        self._operation = operation
        self._providers: dict[str, str | None] = {}
        self._calls = self._failures = self._input = self._output = self._uncosted = 0
        #: Calls refused before sending because the prompt exceeds the context window.
        self.refusals = 0
        self._cost = 0.0
        self._by_model: dict[str, float] = {}

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        litellm = litellm_module()
        kwargs = call.kwargs
        if self._overrides is not None and not NO_RETRIES.keys() <= kwargs.keys():
            _refuse_explicit_retries(kwargs)
            call.kwargs = kwargs = {**self._overrides, **kwargs}
        if self._check is not None:
            self._check(self, litellm, call)
        self._note_provider(litellm, call)
        self._calls += 1
        try:
            result = await call_next(call)
        except Exception:
            self._failures += 1
            raise
        hidden = getattr(result, "_hidden_params", None)
        if isinstance(result, Stream):  # usage and cost arrive with the last chunk
            ref = weakref.ref(result)  # no cycle through the stream: a dropped one ends at once
            result.defer(lambda error: self._account(litellm, call, getattr(
                ref(), "usage_chunk", None), None, streamed=True))
            return result
        self._account(litellm, call, result, hidden)
        return result

    def _note_provider(self, litellm: Any, call: Call) -> None:
        call.record.operation = self._operation
        model = call.kwargs.get("model")
        if not isinstance(model, str):
            return
        try:
            provider = self._providers[model]
        except KeyError:
            try:
                name = litellm.get_llm_provider(model)[1]
            except Exception:  # a model string litellm cannot route
                name = None
            provider = self._providers[model] = (PROVIDERS.get(name, name)
                                                 if isinstance(name, str) else None)
        if provider is not None:
            call.record.provider = provider

    def _account(self, litellm: Any, call: Call, result: Any, hidden: Any, *,
                 streamed: bool = False) -> None:
        """Count usage and cost of one attempt; note them on the call for Metrics."""
        usage = None if result is None else extract_usage(result)
        if usage is None:
            return
        record = call.record
        record.usage = usage
        self._input += usage.input_tokens
        self._output += usage.output_tokens
        model = call.kwargs.get("model")
        cost = _cost(litellm, result, hidden, model, usage, streamed)
        if cost is None:
            self._uncosted += 1
            return
        record.cost = (record.cost or 0.0) + cost  # summed over the call's attempts
        name = getattr(result, "model", None) or model or "?"
        self._cost += cost
        self._by_model[name] = self._by_model.get(name, 0.0) + cost

    def statistics(self) -> LiteLLMStats:
        return LiteLLMStats(self._calls, self._failures, self._input, self._output, self._cost,
                            self._uncosted, MappingProxyType(dict(self._by_model)),
                            self.refusals)

    def __repr__(self) -> str:
        return (f"<litellm calls={self._calls} failures={self._failures} "
                f"cost_usd={self._cost:.6f}>")


async def send(call: Call) -> Any:
    """The terminal of a guarded litellm function: calls it, and from what litellm itself
    returned (before a stream is wrapped) or raised writes the provider's rate-limit headers to
    ``call.response_headers`` (for header observers such as RateLimit) and the server address
    to the call's record."""
    call.mark_sent()
    try:
        raw = await call.fn(*call.args, **call.kwargs)
    except Exception as exc:  # a 429 says the most about the quota
        headers = rate_headers(getattr(exc, "litellm_response_headers", None))
        if headers is not None:
            call.response_headers = headers
        raise
    hidden = getattr(raw, "_hidden_params", None)
    if isinstance(hidden, dict):
        headers = rate_headers(hidden.get("additional_headers"))
        if headers is not None:
            call.response_headers = headers
        server = server_of(hidden.get("api_base"))
        if server is not None:
            call.record.server = server
    return await Stream.start(raw) if is_stream_result(raw) else raw


def _cost(litellm: Any, result: Any, hidden: Any, model: Any, usage: Any,
          streamed: bool) -> float | None:
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    if isinstance(cost, (int, float)):  # litellm already priced it while logging the call
        return float(cost)
    try:
        if streamed:  # a chunk is no response litellm can price: price the usage it reported
            prompt, completion = litellm.cost_per_token(
                model=model or "", prompt_tokens=usage.input_tokens,
                completion_tokens=usage.output_tokens)
            return float(prompt + completion)
        return float(litellm.completion_cost(completion_response=result))
    except Exception:  # not in the cost map (a custom or local model)
        return None


def _refuse_explicit_retries(kwargs: dict[str, Any]) -> None:
    for name in NO_RETRIES:
        value = kwargs.get(name)
        if isinstance(value, int) and value > 0:
            raise ValueError(
                f"{name}={value} would make litellm retry inside llmguard's Retry layer, so "
                f"every llmguard attempt would become several requests (litellm's retries "
                f"and the OpenAI SDK's multiply); the call was not sent. Drop {name} and set "
                f"Retry(attempts=...), or remove the Retry layer to let litellm retry")
