"""A server that queues as LiteLLM's proxy does under load (#30): it takes requests one at a
time in arrival order, and a client that gives up does not take its request out of the queue:
the server still takes, counts and answers it. Shared by the CLI's and the gateway's tests of
the per-attempt timeout (``llmguard._upstream.attempt_timeout``)."""

from __future__ import annotations

import asyncio
from typing import Any

from llmguard._upstream.errors import RateLimited


class Queue:
    """Requests served one at a time, ``service`` s each, in arrival order; those whose
    content is ``"hang"`` are never answered, ``"429"`` refused once taken. ``taken``: every
    request it took (it serves one whose client has gone, as a proxy does). An
    :class:`~llmguard._upstream.protocol.Upstream` for chat."""

    def __init__(self, service: float) -> None:
        self.service, self.lock, self.taken = service, asyncio.Lock(), []

    async def chat(self, request: dict[str, Any], call: Any = None, /) -> Any:
        content = request["messages"][-1]["content"]
        if content == "hang":
            await asyncio.sleep(10**6)
        worker = asyncio.ensure_future(self._serve(content))  # it goes on if the client leaves
        return await asyncio.shield(worker)

    async def _serve(self, content: str) -> dict[str, Any]:
        async with self.lock:
            self.taken.append(content)
            if content == "429":
                raise RateLimited("Rate limit reached", status_code=429, headers={})
            await asyncio.sleep(self.service)
        return {"id": "q", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def secrets(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass
