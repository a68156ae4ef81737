"""The shapes every provider and the engine share: what the provider said about a line and a
batch, the protocol a provider speaks, and what a run did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .plan import Chunk, Limits

__all__ = ["BatchProvider", "BatchRun", "BatchState", "LineResult", "describe_running",
           "error_kind"]


@dataclass(frozen=True, slots=True)
class LineResult:
    """One line's answer (``response``) or failure (``error``: ``{kind, type, message}``).

    ``retryable`` failures (expired, cancelled, a 429 or 5xx at the provider) may be sent again;
    the others (a request the provider refused as invalid) are recorded as the line's error.
    """

    id: str
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    retryable: bool = False
    #: Batches the line was sent in (set by the engine when the result is final).
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class BatchState:
    """A batch as the provider reports it: ended or not, lines finished, and why it failed."""

    ended: bool
    finished: int
    total: int
    #: The provider's error code when the whole batch failed (``token_limit_exceeded``, ...).
    failure: str | None = None
    failure_message: str | None = None
    status: str = ""


def error_kind(status: int) -> tuple[str, bool]:
    """``(kind, retryable)`` of an HTTP status a provider recorded for a line."""
    if status == 429:
        return "rate_limit", True
    if status >= 500:
        return "server_error", True
    if status in (401, 403):
        return "auth", False
    return "invalid_request", False


class BatchProvider(Protocol):
    """A provider's batch protocol (``OpenAIBatches``, ``AnthropicBatches``)."""

    name: str
    limits: Limits

    async def upload(self, chunk: Chunk) -> str | None: ...
    async def create(self, chunk: Chunk, file_id: str | None) -> str: ...
    async def state(self, batch_id: str) -> BatchState: ...
    async def results(self, batch_id: str) -> list[LineResult]: ...
    async def find(self, key: str, since: float, taken: set[str], size: int = 0) -> str | None: ...
    async def cancel(self, batch_id: str) -> None: ...


@dataclass(slots=True)
class BatchRun:
    """What a run did: batches created and adopted, lines answered and failed, still running."""

    created: int = 0
    adopted: int = 0
    answered: int = 0
    failed: int = 0
    resent: int = 0
    requeued: int = 0
    #: Batch ids still running at the provider when the run stopped early.
    running: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: Ids of the lines never submitted because the next line could pass the spend cap.
    not_sent: list[str] = field(default_factory=list)


def describe_running(run: BatchRun) -> str:
    """One sentence for a run stopped while its batches keep running at the provider."""
    ids = ", ".join(run.running[:5]) + (" ..." if len(run.running) > 5 else "")
    return (f"{len(run.running)} batch(es) keep running at the provider ({ids}); "
            "they are paid for whether collected or not")
