"""The batch ledger: each submission to the provider, written before it happens (never pay twice).

A JSON Lines file beside the output (``OUT.batches.jsonl``), appended and fsynced one event at a
time, in the order things happen at the provider:

1. ``intent``: a chunk's key, model and ids, **before** its file is uploaded;
2. ``file``: the uploaded input file's id, before the batch is created;
3. ``batch``: the batch id, the moment the provider returns it;
4. ``collected``: every line of the batch has its record in the output file;
5. ``abandoned``: the batch ended without creating work that still needs collecting (failed
   validation, token limit): its lines are free to be sent again.

A kill between 1 and 3 leaves an intent without a batch: ``--resume`` then looks for the batch
on the provider's list by the chunk key in its metadata before it submits anything again. The
torn last line of a kill mid-write is cut off by the shared JSONL reader.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..._runners.jsonl import read_records

__all__ = ["Ledger", "Submission"]


@dataclass(slots=True)
class Submission:
    """One chunk's story so far, as the ledger tells it."""

    key: str
    model: str
    ids: list[str]
    at: float
    file_id: str | None = None
    batch_id: str | None = None
    collected: bool = False
    abandoned: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Submitted (or maybe submitted) and not yet collected: its lines must not be sent."""
        return not (self.collected or self.abandoned)


class Ledger:
    """Reads the ledger at ``path`` (if any) and appends to it; one per run."""

    __slots__ = ("path", "submissions", "_file")

    def __init__(self, path: str) -> None:
        self.path = path
        #: Chunk key -> its latest submission (a resubmitted chunk replaces an abandoned one).
        self.submissions: dict[str, Submission] = {}

        def parse(event: dict[str, Any]) -> dict[str, Any]:
            if "event" not in event or "key" not in event:
                raise KeyError("event")
            return event

        def corrupt(line_no: int, exc: Exception) -> str:
            return (f"{path} line {line_no} is not a batch ledger event; it is the ledger "
                    "`llmguard run --batch-api` keeps beside its output: do not edit it")

        for _, event in read_records(path, parse, corrupt=corrupt):
            self._apply(event)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def _apply(self, event: dict[str, Any]) -> None:
        kind, key = event["event"], event["key"]
        if kind == "intent":
            self.submissions[key] = Submission(key, event["model"], list(event["ids"]),
                                               float(event["at"]))
            return
        sub = self.submissions.get(key)
        if sub is None:
            return
        if kind == "file":
            sub.file_id = event["file_id"]
        elif kind == "batch":
            sub.batch_id = event["batch_id"]
        elif kind == "collected":
            sub.collected = True
        elif kind == "abandoned":
            sub.abandoned = True

    def write(self, kind: str, key: str, **fields: Any) -> None:
        """Append one event and make it durable before the caller acts on the provider."""
        event = {"event": kind, "key": key, **fields}
        if kind == "intent":
            event.setdefault("at", time.time())
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._apply(event)

    def live(self) -> list[Submission]:
        """Submissions whose lines are (or may be) at the provider and not yet collected."""
        return [s for s in self.submissions.values() if s.live]

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.path} submissions={len(self.submissions)} live={len(self.live())}>"
