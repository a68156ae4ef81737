"""Split a run's lines into provider batches: one model per batch, within the provider's limits.

Pure functions of the lines: the same lines give the same chunks and the same chunk keys, which
is what lets ``--resume`` recognise a chunk it submitted before a crash (the key travels in the
batch's metadata and in the ledger).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..._core.tokens import estimate_tokens

__all__ = ["Chunk", "Limits", "Request", "split"]


@dataclass(frozen=True, slots=True)
class Request:
    """One line to answer: its id (``custom_id`` in the batch) and chat-completions body."""

    id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's per-batch limits (OpenAI: 50,000 requests, 200 MB; Anthropic: 100,000,
    256 MB) and the enqueued-token budget one batch may take (None: no limit known)."""

    requests: int
    bytes: int
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """The requests of one batch (one model), in input order, with their token estimate."""

    model: str
    requests: tuple[Request, ...]
    tokens: int
    size: int

    @property
    def key(self) -> str:
        """Stable identity: the model and the ids, hashed (written to metadata and the ledger)."""
        digest = hashlib.sha256(self.model.encode())
        for request in self.requests:
            digest.update(b"\0" + request.id.encode())
        return digest.hexdigest()[:24]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.requests]


def line_bytes(request: Request) -> int:
    """Bytes of the request's line in an OpenAI batch input file."""
    return len(json.dumps({"custom_id": request.id, "method": "POST",
                           "url": "/v1/chat/completions", "body": request.body},
                          ensure_ascii=False).encode()) + 1


def split(requests: Iterable[Request], limits: Limits) -> Iterator[Chunk]:
    """Chunks of ``requests`` grouped by model (first appearance order), each within ``limits``.

    A single request larger than a limit still gets a chunk of its own: the provider's
    validation then says why, as a recorded error for that line.
    """
    by_model: dict[str, list[Request]] = {}
    for request in requests:
        by_model.setdefault(str(request.body.get("model")), []).append(request)
    for model, items in by_model.items():
        current: list[Request] = []
        tokens = size = 0
        for request in items:
            cost, length = estimate_tokens(**request.body), line_bytes(request)
            full = (len(current) >= limits.requests or size + length > limits.bytes
                    or (limits.tokens is not None and tokens + cost > limits.tokens))
            if current and full:
                yield Chunk(model, tuple(current), tokens, size)
                current, tokens, size = [], 0, 0
            current.append(request)
            tokens += cost
            size += length
        if current:
            yield Chunk(model, tuple(current), tokens, size)
