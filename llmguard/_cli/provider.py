"""The model behind ``llmguard run``: the built-in offline fake models, or litellm for the rest.

Fake models (no network, no API key), chosen by model name:

* ``fake``: answers ``"echo: <last user message>"`` after a short simulated latency, with usage;
* ``fake-fail``: always fails with HTTP 500 (a retryable server error), to try retries and
  ``--fallback-model``;
* ``fake-429``: always answers HTTP 429 with ``retry-after: 0.01``, to try rate-limit handling;
* ``fake-hang``: never answers (until cancelled), to try ``--timeout`` and interrupting a run.

Any other model goes to ``--api-base`` when one is given (an OpenAI-compatible server: vLLM,
llama.cpp, a proxy, OpenAI itself), else to ``litellm.acompletion`` (imported only then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from ..testing import FakeLLM, ProviderError, RateLimited

__all__ = ["FAKE_MODELS", "HTTPError", "Provider", "Trace", "trace"]

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

    __slots__ = ("attempts", "latency", "models")

    def __init__(self) -> None:
        #: Calls that reached the provider (0 for a cache hit).
        self.attempts = 0
        #: Seconds the last attempt took at the provider (None before the first).
        self.latency: float | None = None
        #: Models tried, in order, consecutive repeats collapsed (a retry is not a new model).
        self.models: list[str] = []


#: The trace of the line the current task is working on. A context variable rather than a call
#: argument, so it survives layers that re-run the inner pipeline with new keyword arguments
#: (Fallback by model) and never becomes part of a cache key.
trace: ContextVar[Trace] = ContextVar("llmguard_run_trace")


class HTTPError(Exception):
    """An error answer from an OpenAI-compatible server, shaped for :func:`llmguard.classify`."""

    def __init__(self, message: str, *, status_code: int, headers: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers


class Provider:
    """The innermost handler of ``llmguard run``: one chat completion with the request's model.

    With ``api_base`` it posts the request as JSON to ``{api_base}/chat/completions`` over one
    pooled aiohttp session. Why not the openai SDK or litellm there: both go through httpx, which
    costs 7 to 12 ms of CPU per call on a loopback server against 0.35 ms for aiohttp, so a batch
    would top out near 100 calls/s per core, below many accounts' quotas. An OpenAI-compatible
    server needs no translation, only the HTTP call.
    """

    __slots__ = ("_litellm", "_session", "api_base", "api_key")

    def __init__(self, api_base: str | None = None, api_key: str | None = None) -> None:
        self.api_base = api_base.rstrip("/") if api_base else None
        self.api_key = api_key
        self._session: Any = None
        self._litellm: Any = None

    async def __call__(self, **request: Any) -> Any:
        model = request.get("model")
        send = self._backend(model)
        current = trace.get(None)
        if current is None:
            return await send(request)
        current.attempts += 1
        if not current.models or current.models[-1] != model:
            current.models.append(model)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await send(request)
        finally:
            current.latency = loop.time() - start

    def _backend(self, model: Any) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        fake = FAKE_MODELS.get(model)
        if fake is not None:
            return fake
        if self.api_base is not None:
            return self._post
        if self._litellm is None:  # imported once, before any attempt's clock starts
            import litellm

            self._litellm = litellm
        return self._via_litellm

    async def _via_litellm(self, request: dict[str, Any]) -> Any:
        # The pipeline's Retry layer retries; litellm and the OpenAI client it drives must not
        # also retry, or attempts multiply (3 x 3) and every backoff hides from our accounting.
        return await self._litellm.acompletion(**{"num_retries": 0, "max_retries": 0, **request})

    async def _post(self, request: dict[str, Any]) -> Any:
        if self._session is None:
            import aiohttp

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=0)
            )
        async with self._session.post(f"{self.api_base}/chat/completions", json=request) as r:
            body = await r.json(content_type=None)
            if r.status >= 400:
                error = body.get("error") if isinstance(body, dict) else None
                message = error.get("message") if isinstance(error, dict) else str(body)
                raise HTTPError(f"HTTP {r.status} from {self.api_base}: {message}",
                                status_code=r.status, headers=r.headers)
            return body

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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
