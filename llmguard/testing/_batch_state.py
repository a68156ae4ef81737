"""The lifecycle of a simulated provider batch: validation, execution, finalizing, the end states.

One :class:`SimBatch` per created batch, advanced by its own task on the server's loop (so its
clock is the loop's: virtual under looptime, compressed by the server's timings in real time).
OpenAI's states are modelled (``validating -> in_progress -> finalizing -> completed``, or
``failed``, ``expired``, ``cancelling -> cancelled``); Anthropic's ``processing_status`` is read off
the same states (``in_progress``, ``canceling``, ``ended``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core.tokens import estimate_tokens

__all__ = ["BatchTimings", "SimBatch", "error", "line_tokens", "page"]

#: OpenAI's documented per-file limits (requests per batch, bytes per input file).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchTimings:
    """Server-side durations, in seconds of the loop's clock (compress them for tests)."""

    validating: float = 0.05
    per_request: float = 0.001
    finalizing: float = 0.05


def line_tokens(body: dict[str, Any]) -> int:
    """What a line counts against the enqueued-token limit: prompt estimate plus max_tokens."""
    return estimate_tokens(**body)


@dataclass(slots=True)
class SimBatch:
    """One batch: its requests (``(custom_id, body)`` in upload order), state and results."""

    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: int
    metadata: dict[str, str] | None = None
    input_file_id: str | None = None
    status: str = "validating"
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: custom_id -> (status code, body) for executed lines; custom_id -> error for the rest.
    done: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel_requested: bool = False
    model: str = ""
    tokens: int = 0

    @property
    def active(self) -> bool:
        """Counts against the enqueued-token limit (validated and not yet ended)."""
        return self.status in ("in_progress", "finalizing", "cancelling")

    def request_counts(self) -> dict[str, int]:
        completed = sum(1 for status, _ in self.done.values() if status == 200)
        return {"total": len(self.requests), "completed": completed,
                "failed": len(self.done) - completed + len(self.failed)}

    def cancel(self, now: int) -> None:
        """A cancel request: a batch not yet finalizing stops at its next line."""
        if self.status in ("validating", "in_progress"):
            self.cancel_requested = True
            self.status, self.times["cancelling_at"] = "cancelling", now

    def validate(self, enqueued: int, limit: int | None) -> None:
        """OpenAI's checks at ``validating``: ids unique, one model, size; the token limit."""
        ids = Counter(custom_id for custom_id, _ in self.requests)
        models = {body.get("model") for _, body in self.requests}
        problem: tuple[str, str] | None = None
        if not self.requests:
            problem = ("empty_file", "The batch input file is empty.")
        elif len(self.requests) > MAX_REQUESTS:
            problem = ("too_many_requests",
                       f"{len(self.requests)} requests; at most {MAX_REQUESTS} per batch.")
        elif (dup := next((i for i, n in ids.items() if n > 1), None)) is not None:
            problem = ("duplicate_custom_id", f"custom_id {dup!r} is used more than once.")
        elif len(models) != 1 or None in models:
            problem = ("mixed_models", "A batch must name exactly one model on every line.")
        self.model = str(next(iter(models))) if len(models) == 1 else ""
        self.tokens = sum(line_tokens(body) for _, body in self.requests)
        if problem is None and limit is not None and enqueued + self.tokens > limit:
            problem = ("token_limit_exceeded",
                       f"Enqueued token limit reached for {self.model}: {enqueued} enqueued, "
                       f"this batch needs {self.tokens}, limit {limit}. Please try again once "
                       "some in_progress batches have been completed.")
        if problem is not None:
            self.errors = [{"code": problem[0], "message": problem[1], "param": None,
                            "line": None}]

    async def run(self, now: Callable[[], int], timings: Callable[[], BatchTimings],
                  enqueued: Callable[[], int], limit: int | None, execute: Callable[[str, dict[str, Any]], Any],
                  rng: random.Random, fail_rate: float, expire_rate: float,
                  write_files: Callable[[SimBatch], None]) -> None:
        """Advance the batch through its states to an end state (a task of the server); each
        step lasts what ``timings()`` says as it starts (a test may slow a batch, then speed
        it up, instead of racing a fixed duration on a loaded machine)."""
        await asyncio.sleep(timings().validating)
        self.validate(enqueued(), limit)
        if self.errors:
            self.status, self.times["failed_at"] = "failed", now()
            return
        if self.cancel_requested:
            return await self._cancelled(now, write_files)
        self.status, self.times["in_progress_at"] = "in_progress", now()
        expired = {custom_id for custom_id, _ in self.requests if rng.random() < expire_rate}
        for custom_id, body in self.requests:
            if self.cancel_requested:
                return await self._cancelled(now, write_files)
            if custom_id in expired:
                self.failed[custom_id] = {"code": "batch_expired", "message": (
                    "This request could not be executed before the completion window expired.")}
                continue
            await asyncio.sleep(timings().per_request)
            if rng.random() < fail_rate:
                self.done[custom_id] = (500, {"error": {
                    "message": "The server had an error processing your request.",
                    "type": "server_error", "param": None, "code": None}})
            else:
                self.done[custom_id] = (200, await execute(custom_id, body))
        self.status, self.times["finalizing_at"] = "finalizing", now()
        await asyncio.sleep(timings().finalizing)
        write_files(self)
        end = "expired" if expired else "completed"
        self.status, self.times[f"{end}_at"] = end, now()

    async def _cancelled(self, now: Callable[[], int],
                         write_files: Callable[[SimBatch], None]) -> None:
        for custom_id, _ in self.requests:
            if custom_id not in self.done and custom_id not in self.failed:
                self.failed[custom_id] = {"code": "batch_cancelled",
                                          "message": "The batch was cancelled."}
        write_files(self)
        self.status, self.times["cancelled_at"] = "cancelled", now()


def page(batches: list[SimBatch], limit: int, after: str | None) -> tuple[list[SimBatch], bool]:
    """One page of a newest-first list after the batch ``after``; and whether more follow."""
    if after is not None:
        ids = [b.id for b in batches]
        batches = batches[ids.index(after) + 1:] if after in ids else []
    return batches[:limit], len(batches) > limit


def error(web: Any, status: int, message: str) -> Any:
    """An OpenAI-style error answer."""
    return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                        "param": None, "code": None}}, status=status)
