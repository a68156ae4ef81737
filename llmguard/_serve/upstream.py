"""Where a model's requests go: the offline fake, litellm, or an OpenAI-compatible base URL.

Each upstream is two async callables taking the request as keyword arguments: ``chat(**request)``
returns a ``chat.completion`` dict, or for ``stream=True`` an async iterator of
``chat.completion.chunk`` dicts; ``embed(**request)`` returns an embeddings ``list`` dict. Errors
carry ``status_code`` and ``headers`` so ``lg.classify`` reads them as it reads any provider's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

from llmguard.testing import FakeLLM, ProviderError, RateLimited

from ..integrations._litellm_layer import NO_RETRIES

from .config import ModelConfig

__all__ = ["UpstreamError", "make_upstream"]


class UpstreamError(Exception):
    """An error answer from an OpenAI-compatible upstream (shaped for ``lg.classify``)."""

    def __init__(self, message: str, *, status_code: int, headers: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers


def _fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector from the text's hash: same text, same embedding."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest()
                   for i in range(math.ceil(dimensions / 8)))
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{len(raw) // 4}I", raw)[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _inputs(request: dict[str, Any]) -> list[str]:
    value = request.get("input")
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


class FakeUpstream:
    """The offline model: ``lg.testing.FakeLLM`` echoing the last user message, or a model that
    always fails with ``fail_status`` (429 with ``retry-after: 1``), to try error handling."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.fake = FakeLLM(latency=config.latency, seconds_per_token=config.seconds_per_token,
                            model=config.model or config.name)

    def _fail(self) -> None:
        status = self.config.fail_status
        if status is not None:
            cls = RateLimited if status == 429 else ProviderError
            headers = {"retry-after": "1"} if status == 429 else {}
            raise cls(f"{self.config.name} always fails with HTTP {status}: a built-in test model",
                      status_code=status, headers=headers)

    async def chat(self, **request: Any) -> Any:
        self._fail()
        try:
            return await self.fake.acompletion(**request)
        finally:
            self.fake.calls.clear()  # FakeLLM records calls for tests; a server must not grow

    async def embed(self, **request: Any) -> Any:
        self._fail()
        dims = request.get("dimensions") or 8
        inputs = _inputs(request)
        tokens = sum(max(1, len(t) // 4) for t in inputs)
        return {"object": "list", "model": request.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": _fake_vector(t, dims)}
                         for i, t in enumerate(inputs)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def aclose(self) -> None:
        pass


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else obj


class LitellmUpstream:
    """Through ``litellm`` (imported on first use), which speaks every provider it knows."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._litellm: Any = None
        # base_url / api_key_env route a litellm model string to a given server (a proxy, vLLM).
        self._extra: dict[str, Any] = {}
        if config.base_url:
            self._extra["api_base"] = config.base_url
        if config.api_key_env and os.environ.get(config.api_key_env):
            self._extra["api_key"] = os.environ[config.api_key_env]

    def secrets(self) -> list[str]:
        key = self._extra.get("api_key")
        return [key] if key else []

    def _lib(self) -> Any:
        if self._litellm is None:
            # Its bundled price map: at import litellm otherwise fetches one over the network.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            self._litellm = litellm
        return self._litellm

    async def chat(self, **request: Any) -> Any:
        # The gateway's Retry layer retries; litellm must not also retry (attempts would multiply).
        result = await self._lib().acompletion(**request, **self._extra, **NO_RETRIES)
        if request.get("stream"):
            return self._chunks(result)
        return _dump(result)

    async def _chunks(self, stream: Any) -> AsyncIterator[Any]:
        async for chunk in stream:
            yield _dump(chunk)

    async def embed(self, **request: Any) -> Any:
        return _dump(await self._lib().aembedding(**request, **self._extra, **NO_RETRIES))

    async def aclose(self) -> None:
        pass


class OpenAIUpstream:
    """POSTs to ``{base_url}/chat/completions`` and ``/embeddings`` over one pooled aiohttp
    session (aiohttp, not httpx: a fraction of the CPU per call, which the gateway's own budget
    of under a millisecond per request cannot spare). The bearer key comes from
    ``api_key_env``; it is never logged nor put in an error message."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.base_url = (config.base_url or "").rstrip("/")
        self._key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self._session: Any = None

    def secrets(self) -> list[str]:
        """Values that must never appear in anything printed (for the redactor)."""
        return [self._key] if self._key else []

    def _client(self) -> Any:
        if self._session is None:
            import aiohttp

            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def _post(self, path: str, request: dict[str, Any]) -> Any:
        response = await self._client().post(f"{self.base_url}{path}", json=request)
        if response.status >= 400:
            try:
                body = await response.json(content_type=None)
                error = body.get("error") if isinstance(body, dict) else None
                message = error.get("message") if isinstance(error, dict) else str(body)
            except (ValueError, UnicodeDecodeError):
                message = (await response.text())[:500]
            finally:
                response.release()
            raise UpstreamError(f"HTTP {response.status} from the upstream of model "
                                f"{self.config.name!r}: {message}",
                                status_code=response.status, headers=response.headers)
        return response

    async def chat(self, **request: Any) -> Any:
        response = await self._post("/chat/completions", request)
        if not request.get("stream"):
            try:
                return await response.json(content_type=None)
            finally:
                response.release()
        return self._events(response)

    async def _events(self, response: Any) -> AsyncIterator[Any]:
        try:
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)
            # The body ended without [DONE]: the upstream (or a proxy) cut the stream.
            raise UpstreamError(f"the stream of model {self.config.name!r} ended without "
                                "[DONE]; the answer may be cut, retry the request",
                                status_code=502, headers={})
        finally:
            response.release()

    async def embed(self, **request: Any) -> Any:
        response = await self._post("/embeddings", request)
        try:
            return await response.json(content_type=None)
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_upstream(config: ModelConfig) -> Any:
    """The upstream object for one configured model."""
    kind = {"fake": FakeUpstream, "litellm": LitellmUpstream, "openai": OpenAIUpstream}
    return kind[config.provider](config)
