"""The offline upstream: no network, no key; the default model of ``llmguard run`` and
``llmguard serve``.

Built-in models, chosen by name (:data:`FAKE_MODELS`):

* ``fake``: answers ``"echo: <last user message>"`` after a short simulated latency, with usage;
* ``fake-fail``: always fails with HTTP 500 (a retryable server error), to try retries and
  fallbacks;
* ``fake-429``: always answers HTTP 429 with ``retry-after``, to try rate-limit handling;
* ``fake-hang``: never answers (until cancelled), to try timeouts and interrupting a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .errors import ProviderError, RateLimited
from .fake_llm import FakeLLM

if TYPE_CHECKING:
    from .._core.call import Call

__all__ = ["FAKE_MODELS", "FakeUpstream", "fake_model"]


def _vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector from the text's hash: same text, same embedding."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest()
                   for i in range(math.ceil(dimensions / 8)))
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{len(raw) // 4}I", raw)[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


class FakeUpstream:
    """An :class:`~llmguard._upstream.protocol.Upstream` answering offline with
    :class:`~llmguard.testing.FakeLLM` (echoing the last user message, usage included), or
    always failing with ``fail_status`` (429 with ``retry-after: <retry_after>``), or never
    answering (``hang``)."""

    __slots__ = ("fail_status", "fake", "hang", "name", "retry_after")

    def __init__(self, name: str = "fake", *, latency: float = 0.01,
                 seconds_per_token: float = 0.0005, fail_status: int | None = None,
                 retry_after: float = 1.0, hang: bool = False, model: str | None = None) -> None:
        self.name, self.fail_status, self.retry_after, self.hang = (
            name, fail_status, retry_after, hang)
        self.fake = FakeLLM(latency=latency, seconds_per_token=seconds_per_token,
                            model=model or name)

    async def _refuse(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        status = self.fail_status
        if status is not None:
            what = "rate limited" if status == 429 else "fails"
            message = f"{self.name} always {what} (HTTP {status}): a built-in test model"
            if status == 429:
                raise RateLimited(message, status_code=429,
                                  headers={"retry-after": f"{self.retry_after:g}"})
            raise ProviderError(message, status_code=status, headers={})

    async def chat(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        await self._refuse()
        try:
            return await self.fake.acompletion(**request)
        finally:
            self.fake.calls.clear()  # FakeLLM records calls for tests; a long run must not grow

    async def stream(self, request: dict[str, Any], call: Call | None = None,
                     /) -> AsyncIterator[Any]:
        await self._refuse()
        try:
            chunks = await self.fake.acompletion(**{**request, "stream": True})
        finally:
            self.fake.calls.clear()
        async for chunk in chunks:
            yield chunk

    async def embed(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        await self._refuse()
        dims = request.get("dimensions") or 8
        value = request.get("input")
        inputs = [value] if isinstance(value, str) else [str(v) for v in value or []]
        tokens = sum(max(1, len(t) // 4) for t in inputs)
        return {"object": "list", "model": request.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": _vector(t, dims)}
                         for i, t in enumerate(inputs)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def secrets(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<FakeUpstream {self.name} fail_status={self.fail_status} hang={self.hang}>"


#: The built-in offline models by name: their options for :class:`FakeUpstream`.
FAKE_MODELS: dict[str, dict[str, Any]] = {
    "fake": {},
    "fake-fail": {"fail_status": 500},
    "fake-429": {"fail_status": 429, "retry_after": 0.01},
    "fake-hang": {"hang": True},
}


def fake_model(name: str, **options: Any) -> FakeUpstream:
    """The built-in offline model ``name`` (one of :data:`FAKE_MODELS`), ``options`` overriding
    its defaults."""
    return FakeUpstream(name, **{**FAKE_MODELS[name], **options})
