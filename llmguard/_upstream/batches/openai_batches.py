"""OpenAI's Batch API (and OpenAI-compatible servers) through the real ``openai`` SDK.

Files are uploaded with ``purpose="batch"``, batches created for ``/v1/chat/completions`` with a
24 h window and the chunk's key in ``metadata["llmguard_chunk"]`` (how ``--resume`` finds a batch
whose id never reached the ledger), output and error files downloaded once the batch ends.
"""

from __future__ import annotations

import json
from typing import Any

from .plan import Chunk, Limits
from .results import BatchState, LineResult, error_kind

__all__ = ["OpenAIBatches"]

#: Batch states after which nothing more happens.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
#: Metadata key carrying the chunk key.
CHUNK_KEY = "llmguard_chunk"


class OpenAIBatches:
    """The OpenAI batch protocol over an ``AsyncOpenAI`` client."""

    name = "openai"
    #: OpenAI's documented limits: 50,000 requests and 200 MB per input file.
    limits = Limits(requests=50_000, bytes=200 * 1024 * 1024)

    def __init__(self, client: Any) -> None:
        self.client = client

    async def upload(self, chunk: Chunk) -> str | None:
        data = "".join(json.dumps({"custom_id": r.id, "method": "POST",
                                   "url": "/v1/chat/completions", "body": r.body},
                                  ensure_ascii=False) + "\n" for r in chunk.requests).encode()
        uploaded = await self.client.files.create(file=(f"llmguard-{chunk.key}.jsonl", data),
                                                  purpose="batch")
        return str(uploaded.id)

    async def create(self, chunk: Chunk, file_id: str | None) -> str:
        batch = await self.client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={CHUNK_KEY: chunk.key})
        return str(batch.id)

    async def state(self, batch_id: str) -> BatchState:
        batch = await self.client.batches.retrieve(batch_id)
        counts = batch.request_counts
        finished = (counts.completed + counts.failed) if counts else 0
        failure = message = None
        if batch.status == "failed" and batch.errors and batch.errors.data:
            failure, message = batch.errors.data[0].code, batch.errors.data[0].message
        return BatchState(batch.status in ENDED, finished, counts.total if counts else 0,
                          failure, message, batch.status)

    async def results(self, batch_id: str) -> list[LineResult]:
        batch = await self.client.batches.retrieve(batch_id)
        results: list[LineResult] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for raw in content.text.splitlines():
                if raw.strip():
                    results.append(_line(json.loads(raw)))
        return results

    async def find(self, key: str, since: float, taken: set[str], size: int = 0) -> str | None:
        """The batch created for chunk ``key`` at or after ``since``, found by its metadata."""
        async for batch in self.client.batches.list(limit=100):
            if batch.created_at < since - 60:
                return None  # the list is newest first: older batches cannot be ours
            if (batch.metadata or {}).get(CHUNK_KEY) == key and batch.id not in taken:
                return str(batch.id)
        return None

    async def cancel(self, batch_id: str) -> None:
        await self.client.batches.cancel(batch_id)

    async def close(self) -> None:
        await self.client.close()


def _line(row: dict[str, Any]) -> LineResult:
    custom_id = str(row.get("custom_id"))
    response, error = row.get("response"), row.get("error")
    if response and response.get("status_code") == 200:
        return LineResult(custom_id, response=response.get("body"))
    if response:
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        detail = body.get("error") if isinstance(body, dict) else None
        message = (detail or {}).get("message") if isinstance(detail, dict) else str(body)
        kind, retryable = error_kind(status)
        return LineResult(custom_id, error={"kind": kind, "type": f"HTTP {status}",
                                            "message": str(message)}, retryable=retryable)
    code = (error or {}).get("code") or "unknown"
    return LineResult(custom_id, error={"kind": "expired" if code == "batch_expired" else
                                        "cancelled" if code == "batch_cancelled" else "unknown",
                                        "type": code,
                                        "message": str((error or {}).get("message"))},
                      retryable=True)
