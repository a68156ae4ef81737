"""Job state shared by the in-process :class:`JobManager` and the gateway's HTTP jobs.

One status enum, one set of legal transitions and one progress record (counts and timestamps):
``JobManager`` keeps its jobs' statuses with it, ``llmguard serve`` keeps a :class:`Progress` per
job in memory or (as its :meth:`Progress.to_fields` / :meth:`Progress.from_fields`) in a Redis
hash. A finished job never moves again: whoever records the last outcome or the cancel first
wins, and a later, conflicting transition is refused (:func:`can_move`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.public import public

__all__ = ["TERMINAL", "JobStatus", "Progress", "can_move", "wire_status"]


@public
class JobStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses a job never leaves.
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

_NEXT = {JobStatus.PENDING: {JobStatus.RUNNING, *TERMINAL}, JobStatus.RUNNING: set(TERMINAL)}


def can_move(old: JobStatus, new: JobStatus) -> bool:
    """True if a job in ``old`` may become ``new`` (pending -> running -> one terminal status)."""
    return new in _NEXT.get(old, ())


def wire_status(status: JobStatus) -> str:
    """The status as the HTTP API spells it (``queued`` for a job not started yet)."""
    return "queued" if status is JobStatus.PENDING else status.value


@dataclass(slots=True)
class Progress:
    """A job's status, counts of its items and its wall-clock timestamps (``time.time()``)."""

    total: int | None = None
    status: JobStatus = JobStatus.PENDING
    done: int = 0
    ok: int = 0
    failed: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    #: Items the provider reports finished, recorded or not (a batch job's ``request_counts``):
    #: the progress fraction follows it while the batch runs, the counts follow the records.
    reported: int = 0

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL

    def move(self, new: JobStatus, now: float) -> bool:
        """Change the status if legal (stamping ``started``/``finished``); False if not."""
        if not can_move(self.status, new):
            return False
        if self.started is None and new is JobStatus.RUNNING:
            self.started = now
        if new in TERMINAL:
            self.finished = now
        self.status = new
        return True

    def count(self, ok: bool, now: float) -> bool:
        """Count one finished item; True if that was the last one and the job completed.
        Items that finish after the job was cancelled are counted but move nothing."""
        self.done += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.total is not None and self.done >= self.total:
            return self.move(JobStatus.COMPLETED, now)
        return False

    def to_dict(self) -> dict[str, Any]:
        """The JSON view: status (as the HTTP API spells it), counts, fraction and timestamps."""
        fraction = None if not self.total else round(
            min(self.total, max(self.done, self.reported)) / self.total, 4)
        return {"status": wire_status(self.status), "progress": fraction,
                "counts": {"total": self.total, "done": self.done, "succeeded": self.ok,
                           "failed": self.failed,
                           "pending": None if self.total is None else self.total - self.done},
                "created_at": self.created, "started_at": self.started,
                "finished_at": self.finished}

    def to_fields(self) -> dict[str, str]:
        """Flat string fields (a Redis hash); :meth:`from_fields` reads them back."""
        out = {"status": self.status.value, "done": str(self.done), "ok": str(self.ok),
               "failed": str(self.failed), "created": repr(self.created)}
        if self.total is not None:
            out["total"] = str(self.total)
        if self.reported:
            out["reported"] = str(self.reported)
        for name in ("started", "finished"):
            value = getattr(self, name)
            if value is not None:
                out[name] = repr(value)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Progress:
        def num(name: str) -> float | None:
            value = fields.get(name)
            return None if value in (None, "") else float(value)

        total = fields.get("total")
        return cls(total=None if total in (None, "") else int(total),
                   status=JobStatus(fields.get("status", "pending")),
                   done=int(fields.get("done", 0)), ok=int(fields.get("ok", 0)),
                   failed=int(fields.get("failed", 0)), created=num("created") or 0.0,
                   started=num("started"), finished=num("finished"),
                   reported=int(fields.get("reported", 0)))
