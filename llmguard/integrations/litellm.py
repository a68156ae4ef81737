"""Guard ``litellm.acompletion`` and ``litellm.aembedding`` with a pipeline.

::

    from llmguard.integrations import litellm as lg_litellm

    pipeline = lg.Pipeline(name="chat").fallback({"model": "gpt-4o"}).retry(attempts=4)
    chat = lg_litellm.completion(pipeline)
    response = await chat(model="gpt-4o-mini", messages=[...])
    chat.stats()["litellm"].cost_usd

litellm is imported on the first call, never by ``import llmguard``. What this adds to a plain
``pipeline.wrap(litellm.acompletion)``:

- litellm's own retries (its ``num_retries`` wrapper and the OpenAI SDK's ``max_retries``) are
  turned off when the pipeline retries, so attempts never multiply (4 x 3 x 3 calls per request);
- usage and cost (litellm's cost map) are read from every response, annotated on the call
  (``call.usage``, ``call.note("cost", usd)``) for metrics, and summed in ``stats()``;
- ``count_tokens`` estimates with litellm's per-model tokenizer, for ``RateLimit(estimate=...)``;
- the provider's ``x-ratelimit-*`` headers that litellm passes on (answers and 429s) feed
  ``RateLimit.observe_headers``, as in :mod:`llmguard.integrations.openai`;
- ``check_context=True`` refuses a prompt that cannot fit the model's context window before it
  is sent, as ``litellm.ContextWindowExceededError``, so a ``Fallback({"model": ...})`` to a
  bigger model takes over without a round trip (LiteLLM's Router calls these pre-call checks).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._core.call import Call, Handler
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from .._core.tokens import DEFAULT_OUTPUT_RESERVE, estimate_tokens, extract_usage
from ._util import has_retry, header_observers

__all__ = ["LiteLLMStats", "completion", "count_tokens", "embedding"]

_NO_RETRIES = {"num_retries": 0, "max_retries": 0}


def _litellm() -> Any:
    import litellm

    return litellm


def count_tokens(*args: Any, **kwargs: Any) -> int:
    """Tokens an ``acompletion(**kwargs)`` call will consume: prompt plus reserved output.

    The prompt is counted by ``litellm.token_counter`` with the model's own tokenizer; the output
    reservation is ``max_tokens`` (or ``max_completion_tokens``), else
    ``llmguard._core.tokens.DEFAULT_OUTPUT_RESERVE``. Falls back to ``llmguard.estimate_tokens`` for
    calls litellm cannot count (no messages, an unknown content shape).
    """
    messages = kwargs.get("messages")
    text = kwargs.get("input") if messages is None else None
    if messages is None and text is None:
        return estimate_tokens(*args, **kwargs)
    try:
        prompt = _litellm().token_counter(
            model=kwargs.get("model") or "", messages=messages, text=text,
            tools=kwargs.get("tools"),
        )
    except Exception:  # a content shape litellm's counter does not know: estimate instead
        return estimate_tokens(*args, **kwargs)
    if text is not None:  # embeddings produce no output tokens
        return prompt
    for name in ("max_tokens", "max_completion_tokens"):
        limit = kwargs.get(name)
        if isinstance(limit, int):
            return prompt + limit
    return prompt + DEFAULT_OUTPUT_RESERVE


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


def _response_cost(litellm: Any, result: Any, hidden: Any) -> float | None:
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    if isinstance(cost, (int, float)):  # litellm already priced it while logging the call
        return float(cost)
    try:
        return float(litellm.completion_cost(completion_response=result))
    except Exception:  # not in the cost map (a custom or local model)
        return None


class _LiteLLM:
    """Innermost layer: litellm arguments in, usage and cost out.

    Innermost so that it sees the arguments each attempt really sends (after a Fallback's
    ``{"model": ...}`` override) and counts every attempt's spend, the failed ones included.
    """

    __slots__ = ("_overrides", "_check_context", "_observers", "_max_input", "_calls", "_failures",
                 "_input", "_output", "_cost", "_uncosted", "_by_model", "_refusals")
    __name__ = "litellm"  # its key in Guarded.stats()

    def __init__(
        self, *, no_retries: bool, check_context: bool, observers: tuple[Any, ...]
    ) -> None:
        self._overrides = _NO_RETRIES if no_retries else None
        self._check_context = check_context
        self._observers = observers
        self._max_input: dict[str, int | None] = {}
        self._calls = self._failures = self._input = self._output = 0
        self._uncosted = self._refusals = 0
        self._cost = 0.0
        self._by_model: dict[str, float] = {}

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        litellm = _litellm()
        kwargs = call.kwargs
        if self._overrides is not None and not _NO_RETRIES.keys() <= kwargs.keys():
            _warn_explicit_retries(kwargs)
            call.kwargs = kwargs = {**self._overrides, **kwargs}
        if self._check_context:
            self._refuse_oversized(litellm, call)
        self._calls += 1
        try:
            result = await call_next(call)
        except Exception as exc:
            self._failures += 1
            if self._observers:  # a 429 says the most about the quota
                self._observe(getattr(exc, "litellm_response_headers", None), call)
            raise
        hidden = getattr(result, "_hidden_params", None)
        if self._observers and isinstance(hidden, dict):
            self._observe(hidden.get("additional_headers"), call)
        usage = extract_usage(result)
        if usage is not None:
            call.usage = usage
            self._input += usage.input_tokens
            self._output += usage.output_tokens
        cost = _response_cost(litellm, result, hidden) if usage is not None else None
        if cost is None:
            self._uncosted += usage is not None
            return result
        call.note("cost", cost)
        model = getattr(result, "model", None) or kwargs.get("model") or "?"
        self._cost += cost
        self._by_model[model] = self._by_model.get(model, 0.0) + cost
        return result

    def _observe(self, headers: Any, call: Call) -> None:
        # litellm passes the provider's headers on with an ``llm_provider-`` prefix (only some
        # also without it): give RateLimit the provider's own names.
        if not headers:
            return
        rate_headers = {
            key.removeprefix("llm_provider-"): value
            for key, value in headers.items() if "x-ratelimit-" in key
        }
        for observer in self._observers:
            observer.observe_headers(rate_headers, partition=call.partition)

    def _refuse_oversized(self, litellm: Any, call: Call) -> None:
        model = call.kwargs.get("model")
        if not isinstance(model, str):
            return
        try:
            limit = self._max_input[model]
        except KeyError:
            try:
                info = litellm.get_model_info(model)
                limit = info.get("max_input_tokens") or info.get("max_tokens")
            except Exception:  # a model the cost map does not know: no check possible
                limit = None
            self._max_input[model] = limit
        if limit is None:
            return
        tokens = count_tokens(*call.args, **{**call.kwargs, "max_tokens": 0})
        if tokens > limit:
            self._refusals += 1
            raise litellm.ContextWindowExceededError(
                message=(
                    f"llmguard: the prompt has {tokens} tokens and {model} accepts at most "
                    f"{limit} (litellm's model map); the call was not sent. Add a fallback to a "
                    f"larger model, e.g. Fallback({{'model': ...}}), or shorten the prompt"
                ),
                model=model,
                llm_provider="llmguard",
            )

    def statistics(self) -> LiteLLMStats:
        return LiteLLMStats(
            self._calls, self._failures, self._input, self._output, self._cost,
            self._uncosted, MappingProxyType(dict(self._by_model)), self._refusals,
        )

    def __repr__(self) -> str:
        return (
            f"<litellm calls={self._calls} failures={self._failures} "
            f"cost_usd={self._cost:.6f}>"
        )


def _warn_explicit_retries(kwargs: dict[str, Any]) -> None:
    for name in _NO_RETRIES:
        value = kwargs.get(name)
        if isinstance(value, int) and value > 0:
            warnings.warn(
                f"{name}={value} makes litellm retry inside llmguard's Retry layer, so "
                f"attempts multiply (each llmguard attempt becomes up to {value + 1} requests); "
                f"drop {name} and configure Retry(attempts=...) instead",
                stacklevel=4,
            )


def _guarded(
    pipeline: Pipeline | None, fn: Callable[..., Any], *, check_context: bool
) -> Guarded[..., Any]:
    pipeline = Pipeline() if pipeline is None else pipeline
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a llmguard.Pipeline or None, got {pipeline!r}; "
                        "build one with llmguard.Pipeline(...) or llmguard.guard(...)")
    layer = _LiteLLM(
        no_retries=has_retry(pipeline), check_context=check_context,
        observers=header_observers(pipeline),
    )
    return pipeline.then(layer).wrap(fn)


def completion(pipeline: Pipeline | None = None, *, check_context: bool = False) -> Guarded[..., Any]:
    """A guarded ``litellm.acompletion``: ``chat = completion(pipeline); await chat(model=..., ...)``.

    ``check_context=True`` refuses prompts longer than the model's context window (per litellm's
    model map) before sending them, raising ``litellm.ContextWindowExceededError``.
    """
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        """``litellm.acompletion`` (imported on first use)."""
        return await _litellm().acompletion(*args, **kwargs)

    return _guarded(pipeline, acompletion, check_context=check_context)


def embedding(pipeline: Pipeline | None = None) -> Guarded[..., Any]:
    """A guarded ``litellm.aembedding``: ``embed = embedding(pipeline); await embed(model=..., input=[...])``."""
    async def aembedding(*args: Any, **kwargs: Any) -> Any:
        """``litellm.aembedding`` (imported on first use)."""
        return await _litellm().aembedding(*args, **kwargs)

    return _guarded(pipeline, aembedding, check_context=False)
