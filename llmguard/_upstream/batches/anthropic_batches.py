"""Anthropic's Message Batches through the real ``anthropic`` SDK.

Lines are chat-completions requests (what ``llmguard run`` reads); each becomes Messages API
``params``: system messages go to ``system``, ``stop`` to ``stop_sequences``, and ``max_tokens``
(required by Anthropic) defaults to :data:`DEFAULT_MAX_TOKENS`. Anthropic restricts a
``custom_id`` to 64 letters, digits, ``-`` and ``_``, so a line is sent as ``i<position>`` in its
chunk and mapped back through the ledger's ids. Message Batches carry no metadata: ``--resume``
finds a batch whose id never reached the ledger by its creation time and size (and refuses to
guess when two candidates match).
"""

from __future__ import annotations

import datetime
from typing import Any

from .plan import Chunk, Limits
from .results import BatchState, LineResult

__all__ = ["AnthropicBatches", "to_messages_params"]

#: ``max_tokens`` for lines that give none (Anthropic requires one).
DEFAULT_MAX_TOKENS = 1024
_PASSED = ("temperature", "top_p", "top_k", "metadata", "tools", "tool_choice")
_RETRYABLE = frozenset({"api_error", "overloaded_error", "rate_limit_error"})


def to_messages_params(body: dict[str, Any]) -> dict[str, Any]:
    """A chat-completions body as Messages API parameters."""
    system = [str(m.get("content", "")) for m in body.get("messages", [])
              if m.get("role") == "system"]
    params: dict[str, Any] = {
        "model": body.get("model"),
        "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens")
                          or DEFAULT_MAX_TOKENS),
        "messages": [{"role": m.get("role"), "content": m.get("content")}
                     for m in body.get("messages", []) if m.get("role") != "system"],
    }
    if system:
        params["system"] = "\n\n".join(system)
    if body.get("stop"):
        stop = body["stop"]
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    params.update({k: body[k] for k in _PASSED if k in body})
    return params


class AnthropicBatches:
    """The Message Batches protocol over an ``AsyncAnthropic`` client."""

    name = "anthropic"
    #: Anthropic's documented limits: 100,000 requests or 256 MB per batch.
    limits = Limits(requests=100_000, bytes=256 * 1024 * 1024)

    def __init__(self, client: Any) -> None:
        self.client = client
        self._ids: dict[str, list[str]] = {}  # batch id -> line ids by position

    def remember(self, batch_id: str, ids: list[str]) -> None:
        """The line ids of ``batch_id`` in submission order (from the ledger)."""
        self._ids[batch_id] = ids

    async def upload(self, chunk: Chunk) -> str | None:
        return None  # the requests travel in the create call itself

    async def create(self, chunk: Chunk, file_id: str | None) -> str:
        batch = await self.client.messages.batches.create(requests=[
            {"custom_id": f"i{n}", "params": to_messages_params(r.body)}
            for n, r in enumerate(chunk.requests)])
        self._ids[batch.id] = chunk.ids
        return str(batch.id)

    async def state(self, batch_id: str) -> BatchState:
        batch = await self.client.messages.batches.retrieve(batch_id)
        c = batch.request_counts
        total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
        return BatchState(batch.processing_status == "ended", total - c.processing, total,
                          status=batch.processing_status)

    async def results(self, batch_id: str) -> list[LineResult]:
        ids = self._ids[batch_id]
        out: list[LineResult] = []
        async for row in await self.client.messages.batches.results(batch_id):
            line_id = ids[int(row.custom_id[1:])]
            result = row.result
            if result.type == "succeeded":
                message = result.message.model_dump(mode="json", exclude_none=True)
                out.append(LineResult(line_id, response=message))
            elif result.type == "errored":
                detail = result.error.error
                out.append(LineResult(line_id, error={
                    "kind": "server_error" if detail.type in _RETRYABLE else "invalid_request",
                    "type": detail.type, "message": detail.message},
                    retryable=detail.type in _RETRYABLE))
            else:  # canceled, expired
                out.append(LineResult(line_id, error={
                    "kind": "expired" if result.type == "expired" else "cancelled",
                    "type": result.type, "message": f"the line was {result.type} at Anthropic"},
                    retryable=True))
        return out

    async def find(self, key: str, since: float, taken: set[str], size: int = 0) -> str | None:
        """The one batch of ``size`` requests created at or after ``since`` that is not
        ``taken``; None when there is none; an error when two could be it."""
        start = datetime.datetime.fromtimestamp(since - 5, datetime.UTC)
        found: list[str] = []
        async for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at < start:
                break
            c = batch.request_counts
            total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
            if batch.id not in taken and total == size:
                found.append(str(batch.id))
        if len(found) > 1:
            raise RuntimeError(
                f"cannot tell which of Anthropic batches {', '.join(found)} holds chunk {key} "
                "(Message Batches carry no metadata); cancel the ones that are not this run's "
                "at the console, then --resume again")
        return found[0] if found else None

    async def cancel(self, batch_id: str) -> None:
        await self.client.messages.batches.cancel(batch_id)

    async def close(self) -> None:
        await self.client.close()
