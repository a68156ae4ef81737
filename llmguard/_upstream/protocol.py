"""The ``Upstream`` protocol: where an application's requests go, whatever the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._core.call import Call

__all__ = ["Upstream"]


@runtime_checkable
class Upstream(Protocol):
    """A provider transport taking OpenAI-shaped requests (a dict: ``model``, ``messages``, ...).

    * ``chat(request, call)`` returns a ``chat.completion`` dict;
    * ``stream(request, call)`` is an async iterator of ``chat.completion.chunk`` dicts
      (``request["stream"]`` is true); an error before the first chunk raises on the first
      ``__anext__``;
    * ``embed(request, call)`` returns an embeddings ``list`` dict;
    * errors carry ``status_code`` and ``headers`` (what :func:`llmguard.classify` reads);
    * when ``call`` is given, the answer's HTTP response headers (rate-limit headers) are written
      to ``call.response_headers``, success or error, so the pipeline's header observers learn
      the provider's quotas; an upstream without headers leaves it alone;
    * ``secrets()`` lists the credentials it holds, which nothing may print (the redactor's
      list); ``aclose()`` releases connections. No method retries: the pipeline's Retry does.
    """

    async def chat(self, request: dict[str, Any], call: Call | None = None, /) -> Any: ...

    def stream(self, request: dict[str, Any], call: Call | None = None, /) -> AsyncIterator[Any]: ...

    async def embed(self, request: dict[str, Any], call: Call | None = None, /) -> Any: ...

    def secrets(self) -> list[str]: ...

    async def aclose(self) -> None: ...
