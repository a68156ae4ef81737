"""The litellm upstream: every provider litellm speaks (imported on first use)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._core.redact import redact_url

if TYPE_CHECKING:
    from .._core.call import Call

__all__ = ["NO_RETRIES", "LitellmUpstream", "import_litellm", "rate_headers"]

#: The pipeline's Retry layer retries; litellm and the OpenAI client it drives must not also
#: retry, or attempts multiply (3 x 3) and every backoff hides from llmguard's accounting.
NO_RETRIES = {"num_retries": 0, "max_retries": 0}


def import_litellm() -> Any:
    """litellm, with its bundled price map (at import it otherwise fetches one over the network)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else obj


def rate_headers(headers: Any) -> dict[str, str] | None:
    """The provider's rate-limit headers among those litellm keeps on an answer or error: litellm
    passes them on with an ``llm_provider-`` prefix (only some also without it)."""
    if not headers:
        return None
    return {key.removeprefix("llm_provider-"): value for key, value in headers.items()
            if "ratelimit-" in key}  # x-ratelimit-* and anthropic-ratelimit-*


class LitellmUpstream:
    """An :class:`~llmguard._upstream.protocol.Upstream` through ``litellm.acompletion`` /
    ``aembedding``. ``api_base`` and ``api_key`` route a litellm model string to a given server
    (a proxy, vLLM); answers come back as plain dicts."""

    __slots__ = ("_extra", "_litellm")

    def __init__(self, api_base: str | None = None, api_key: str | None = None) -> None:
        self._litellm: Any = None
        self._extra: dict[str, Any] = dict(NO_RETRIES)
        if api_base:
            self._extra["api_base"] = api_base
        if api_key:
            self._extra["api_key"] = api_key

    def secrets(self) -> list[str]:
        key = self._extra.get("api_key")
        return [key] if key else []

    def open(self) -> Any:
        """litellm, imported now (about 1 s) rather than inside the first admitted call."""
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    def _note(self, result: Any, call: Call | None) -> None:
        """The answer's headers and litellm's price of it, on the call."""
        hidden = getattr(result, "_hidden_params", None)
        if call is None or not isinstance(hidden, dict):
            return
        headers = rate_headers(hidden.get("additional_headers"))
        if headers is not None:
            call.response_headers = headers
        cost = hidden.get("response_cost")
        if isinstance(cost, (int, float)):
            call.record.cost = (call.record.cost or 0.0) + float(cost)

    async def _send(self, method: str, request: dict[str, Any], call: Call | None) -> Any:
        try:
            result = await getattr(self.open(), method)(**{**request, **self._extra})
        except Exception as exc:  # a 429 says the most about the quota: its headers too
            headers = rate_headers(getattr(exc, "litellm_response_headers", None))
            if call is not None and headers is not None:
                call.response_headers = headers
            raise
        self._note(result, call)
        return result

    async def chat(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        return _dump(await self._send("acompletion", request, call))

    async def stream(self, request: dict[str, Any], call: Call | None = None,
                     /) -> AsyncIterator[Any]:
        async for chunk in await self._send("acompletion", {**request, "stream": True}, call):
            yield _dump(chunk)

    async def embed(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        return _dump(await self._send("aembedding", request, call))

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        base = self._extra.get("api_base")  # (its password hidden, as every url shown)
        return f"<LitellmUpstream api_base={None if base is None else redact_url(base)!r}>"
