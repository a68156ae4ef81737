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
  passing ``num_retries``/``max_retries`` > 0 explicitly under a Retry layer is refused
  (``ValueError``) before anything is sent;
- usage and cost (litellm's cost map) are read from every response, streamed ones included
  (from the final chunk, with ``stream_options={"include_usage": True}``), annotated on the
  call (``call.record.usage``, ``call.record.cost``) for metrics (``llmguard.cost``), and summed
  in ``stats()``; so are ``gen_ai.provider.name``, the operation (``embeddings``) and the
  server address;
- ``count_tokens`` estimates with litellm's per-model tokenizer, for ``RateLimit(tokens=...)``;
- the provider's ``x-ratelimit-*`` headers that litellm passes on (answers, streams, 429s) go to
  ``call.response_headers``, which the pipeline's header observers (``RateLimit``) learn from,
  as in :mod:`llmguard.integrations.openai`;
- ``check_context=True`` refuses a prompt that cannot fit the model's context window before it
  is sent, as ``litellm.ContextWindowExceededError``, so a ``Fallback({"model": ...})`` to a
  bigger model takes over without a round trip (LiteLLM's Router calls these pre-call checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core.call import Call
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from .._core.tokens import DEFAULT_OUTPUT_RESERVE, estimate_tokens
from ._litellm_layer import LiteLLMLayer, LiteLLMStats, send
from ._litellm_layer import litellm_module as _litellm
from ._util import has_retry

__all__ = ["LiteLLMStats", "completion", "count_tokens", "embedding"]

_MAX_INPUT: dict[str, int | None] = {}  # context window per model, from litellm's model map


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


def _refuse_oversized(layer: LiteLLMLayer, litellm: Any, call: Call) -> None:
    """``check_context``: refuse a prompt longer than the model's context window, unsent."""
    model = call.kwargs.get("model")
    if not isinstance(model, str):
        return
    try:
        limit = _MAX_INPUT[model]
    except KeyError:
        try:
            info = litellm.get_model_info(model)
            limit = info.get("max_input_tokens") or info.get("max_tokens")
        except Exception:  # a model the cost map does not know: no check possible
            limit = None
        _MAX_INPUT[model] = limit
    if limit is None:
        return
    tokens = count_tokens(*call.args, **{**call.kwargs, "max_tokens": 0})
    if tokens > limit:
        layer.refusals += 1
        raise litellm.ContextWindowExceededError(
            message=(
                f"llmguard: the prompt has {tokens} tokens and {model} accepts at most "
                f"{limit} (litellm's model map); the call was not sent. Add a fallback to a "
                f"larger model, e.g. Fallback({{'model': ...}}), or shorten the prompt"
            ),
            model=model,
            llm_provider="llmguard",
        )


def _guarded(
    pipeline: Pipeline | None, fn: Callable[..., Any], *, check_context: bool, operation: str
) -> Guarded[..., Any]:
    pipeline = Pipeline() if pipeline is None else pipeline
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a llmguard.Pipeline or None, got {pipeline!r}; "
                        "build one with llmguard.Pipeline(...) or llmguard.guard(...)")
    layer = LiteLLMLayer(no_retries=has_retry(pipeline),
                         check=_refuse_oversized if check_context else None, operation=operation)
    return pipeline.then(layer).wrap(fn, terminal=send)


def completion(pipeline: Pipeline | None = None, *, check_context: bool = False) -> Guarded[..., Any]:
    """A guarded ``litellm.acompletion``: ``chat = completion(pipeline); await chat(model=..., ...)``.

    ``check_context=True`` refuses prompts longer than the model's context window (per litellm's
    model map) before sending them, raising ``litellm.ContextWindowExceededError``.
    """
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        """``litellm.acompletion`` (imported on first use)."""
        return await _litellm().acompletion(*args, **kwargs)

    return _guarded(pipeline, acompletion, check_context=check_context, operation="chat")


def embedding(pipeline: Pipeline | None = None) -> Guarded[..., Any]:
    """A guarded ``litellm.aembedding``: ``embed = embedding(pipeline); await embed(model=..., input=[...])``."""
    async def aembedding(*args: Any, **kwargs: Any) -> Any:
        """``litellm.aembedding`` (imported on first use)."""
        return await _litellm().aembedding(*args, **kwargs)

    return _guarded(pipeline, aembedding, check_context=False, operation="embeddings")
