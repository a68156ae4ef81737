"""The batch ledger: each submission to the provider, recorded before it happens (never pay twice).

A ledger is a log of events, in the order things happen at the provider:

1. ``intent``: a chunk's key, model and ids, **before** its file is uploaded;
2. ``file``: the uploaded input file's id, before the batch is created;
3. ``batch``: the batch id, the moment the provider returns it;
4. ``collected``: every line of the batch has its record;
5. ``abandoned``: the batch ended without creating work that still needs collecting (failed
   validation, token limit): its lines are free to be sent again.

A kill between 1 and 3 leaves an intent without a batch: the next run then looks for the batch
on the provider's list by the chunk key in its metadata before it submits anything again.

Where the log lives is the :class:`BatchLedger` seam: :class:`FileLedger` (``llmguard run``: a
JSON Lines file beside the output, ``OUT.batches.jsonl``, fsynced one event at a time; the torn
last line of a kill mid-write is cut off by the shared JSONL reader) and :class:`StoredLedger`
(the gateway's jobs: the events kept in the job store, in memory or in Redis, so whichever
replica takes a job over reads what the one before it submitted).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..._runners.jsonl import read_records

__all__ = ["BatchLedger", "EventLedger", "FileLedger", "StoredLedger", "Submission"]


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


class BatchLedger(Protocol):
    """Where a batch run records its submissions (what :func:`~.engine.run_batches` drives).

    * ``submissions``: chunk key -> its latest :class:`Submission`, as the events so far tell
      it (an earlier run's included: read when the ledger was opened).
    * ``await write(kind, key, **fields)``: record one event (see the module doc) and apply it
      to ``submissions``. When it returns, the event is durable where the ledger lives (a
      later run reads it even if this process is killed the next instant): the engine acts on
      the provider only after it returns.
    * ``live()``: the submissions whose lines are, or may be, at the provider and not yet
      collected (neither ``collected`` nor ``abandoned``).
    """

    submissions: dict[str, Submission]

    async def write(self, kind: str, key: str, **fields: Any) -> None: ...

    def live(self) -> list[Submission]: ...


class EventLedger:
    """The events of a ledger applied to its submissions; subclasses say where events go."""

    __slots__ = ("submissions",)

    def __init__(self, events: Iterable[dict[str, Any]] = ()) -> None:
        #: Chunk key -> its latest submission (a resubmitted chunk replaces an abandoned one).
        self.submissions: dict[str, Submission] = {}
        for event in events:
            self._apply(event)

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

    @staticmethod
    def event(kind: str, key: str, **fields: Any) -> dict[str, Any]:
        """One event as it is kept (an ``intent`` stamped with its wall-clock time)."""
        event = {"event": kind, "key": key, **fields}
        if kind == "intent":
            event.setdefault("at", time.time())
        return event

    def live(self) -> list[Submission]:
        """Submissions whose lines are (or may be) at the provider and not yet collected."""
        return [s for s in self.submissions.values() if s.live]


class FileLedger(EventLedger):
    """The ledger in a JSON Lines file at ``path``: read when opened (if it exists), then
    appended and fsynced one event at a time; one per run."""

    __slots__ = ("_file", "path")

    def __init__(self, path: str) -> None:
        def parse(event: dict[str, Any]) -> dict[str, Any]:
            if "event" not in event or "key" not in event:
                raise KeyError("event")
            return event

        def corrupt(line_no: int, exc: Exception) -> str:
            return (f"{path} line {line_no} is not a batch ledger event; it is the ledger "
                    "`llmguard run --batch-api` keeps beside its output: do not edit it")

        super().__init__(event for _, event in read_records(path, parse, corrupt=corrupt))
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    async def write(self, kind: str, key: str, **fields: Any) -> None:
        """Append one event and make it durable before the caller acts on the provider."""
        event = self.event(kind, key, **fields)
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._apply(event)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return (f"<FileLedger {self.path} submissions={len(self.submissions)} "
                f"live={len(self.live())}>")


class StoredLedger(EventLedger):
    """The ledger as events kept by someone else (a job store): ``events`` are those kept so
    far, and ``await append(event)`` keeps one more, durably, before it returns."""

    __slots__ = ("_append",)

    def __init__(self, events: Iterable[dict[str, Any]],
                 append: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        super().__init__(events)
        self._append = append

    async def write(self, kind: str, key: str, **fields: Any) -> None:
        event = self.event(kind, key, **fields)
        await self._append(event)
        self._apply(event)

    def __repr__(self) -> str:
        return f"<StoredLedger submissions={len(self.submissions)} live={len(self.live())}>"
