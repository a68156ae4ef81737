"""The model behind ``llmguard run``: the built-in offline fake models, or litellm for the rest.

Fake models (no network, no API key), chosen by model name:

* ``fake``: answers ``"echo: <last user message>"`` after a short simulated latency, with usage;
* ``fake-fail``: always fails with HTTP 500 (a retryable server error), to try retries and
  ``--fallback-model``;
* ``fake-429``: always answers HTTP 429 with ``retry-after: 0.01``, to try rate-limit handling;
* ``fake-hang``: never answers (until cancelled), to try ``--timeout`` and interrupting a run.

Any other model name goes to ``litellm.acompletion`` (imported only then).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

from .testing import FakeLLM, ProviderError, RateLimited

__all__ = ["FAKE_MODELS", "Trace", "complete", "trace"]

#: Simulated latency of the ``fake`` model: a base plus a little per output token.
_FAKE = FakeLLM(latency=0.01, seconds_per_token=0.0005)


async def _fail(request: dict[str, Any]) -> Any:
    raise ProviderError(
        f"{request['model']} always fails (HTTP 500): a built-in test model",
        status_code=500, headers={},
    )


async def _rate_limited(request: dict[str, Any]) -> Any:
    raise RateLimited(
        f"{request['model']} is always rate limited (HTTP 429): a built-in test model",
        status_code=429, headers={"retry-after": "0.01"},
    )


async def _hang(request: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


async def _echo(request: dict[str, Any]) -> Any:
    try:
        return await _FAKE.acompletion(**request)
    finally:
        _FAKE.calls.clear()  # FakeLLM records calls for test assertions; a long run must not


FAKE_MODELS = {"fake": _echo, "fake-fail": _fail, "fake-429": _rate_limited, "fake-hang": _hang}


class Trace:
    """What the provider saw of one input line, across retries and fallbacks."""

    __slots__ = ("attempts", "models")

    def __init__(self) -> None:
        #: Calls that reached the provider (0 for a cache hit).
        self.attempts = 0
        #: Models tried, in order, consecutive repeats collapsed (a retry is not a new model).
        self.models: list[str] = []


#: The trace of the line the current task is working on. A context variable rather than a call
#: argument, so it survives layers that re-run the inner pipeline with new keyword arguments
#: (Fallback by model) and never becomes part of a cache key.
trace: ContextVar[Trace] = ContextVar("llmguard_run_trace")


async def complete(**request: Any) -> Any:
    """The innermost handler: one chat completion with the model named in ``request``."""
    model = request.get("model")
    current = trace.get(None)
    if current is not None:
        current.attempts += 1
        if not current.models or current.models[-1] != model:
            current.models.append(model)
    fake = FAKE_MODELS.get(model)  # type: ignore[arg-type]
    if fake is not None:
        return await fake(request)
    import litellm

    # The pipeline's Retry layer retries; litellm and the OpenAI client it drives must not also
    # retry, or attempts multiply (3 x 3) and every backoff hides from our accounting.
    return await litellm.acompletion(**{"num_retries": 0, "max_retries": 0, **request})


def cost_of(response: Any) -> float | None:
    """The response's cost in USD, when litellm priced it."""
    hidden = getattr(response, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    return float(cost) if isinstance(cost, (int, float)) else None


def to_json(response: Any) -> Any:
    """A JSON-ready form of a response: dicts as they are, SDK objects through ``model_dump``."""
    if isinstance(response, (dict, list, str, int, float, bool)) or response is None:
        return response
    dump = getattr(response, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_none=True)
    return str(response)
