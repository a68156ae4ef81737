"""Input lines to requests, and finished records to an output file that a later run can resume.

The output file is the checkpoint: every finished line is one JSON record carrying the input line
number and id, flushed as soon as it may be written, so ``--resume`` reads the ids already there
and skips them. A line is never written twice, and a torn last line (a kill mid-write) is cut off
before appending.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Job", "OutputWriter", "done_ids", "read_jobs"]

#: Lines finished out of order are held back at most this many before they are written anyway
#: (out of order) to bound memory; the file is put back in input order when the run completes.
MAX_HELD = 10_000


@dataclass(slots=True)
class Job:
    """One input line: the request to send, or why it cannot be sent."""

    #: 1-based line number in the input file.
    line: int
    #: The request's id: its ``custom_id`` when it has one, else ``line-<n>``.
    id: str
    #: Keyword arguments for the chat completion call (None when the line is invalid).
    request: dict[str, Any] | None = None
    #: Why the line cannot be sent (None when it is valid).
    problem: str | None = None
    #: The line's ``metadata`` object, echoed into its output record.
    metadata: Any = None
    #: Admission priority read from ``--priority-field`` (higher is served first).
    priority: int | None = None
    #: Set by the runner: position among the lines this run sends (for output ordering).
    index: int = -1


_SHAPE = (
    'each line must be a chat request {"model": ..., "messages": [...]} or a Batch API line '
    '{"custom_id": ..., "body": {"messages": [...]}}'
)


def parse_line(line_no: int, text: str, priority_field: str | None = None) -> Job:
    """Turn one input line into a :class:`Job`; a bad line becomes a job with a ``problem``."""
    job = Job(line_no, f"line-{line_no}")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        job.problem = f"line {line_no} is not valid JSON ({exc}); {_SHAPE}"
        return job
    if not isinstance(obj, dict):
        job.problem = f"line {line_no} is a JSON {type(obj).__name__}, not an object; {_SHAPE}"
        return job
    custom_id = obj.get("custom_id")
    if custom_id is not None:
        job.id = str(custom_id)
    job.metadata = obj.get("metadata")
    if isinstance(obj.get("body"), dict):  # Batch API form: url/method are implied (chat)
        request = dict(obj["body"])
    else:
        request = {k: v for k, v in obj.items() if k not in ("custom_id", "metadata")}
    if priority_field is not None:
        value = obj.get(priority_field, request.get(priority_field))
        request.pop(priority_field, None)  # a routing hint, not a provider parameter
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                job.problem = (
                    f"line {line_no}: priority field {priority_field!r} must be a number, "
                    f"got {value!r}"
                )
                return job
            job.priority = int(value)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        job.problem = f"line {line_no} has no non-empty 'messages' list; {_SHAPE}"
        return job
    job.request = request
    return job


def read_jobs(path: str, priority_field: str | None = None) -> Iterator[Job]:
    """Stream the input file's non-blank lines as jobs, one at a time (constant memory)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, text in enumerate(f, 1):
            if text.strip():
                yield parse_line(line_no, text, priority_field)


def done_ids(path: str, *, redo_failed: bool = False) -> set[str]:
    """Ids already recorded in an output file, for ``--resume``.

    A torn last line (a kill mid-write) is cut off so appends stay valid JSONL; its line was
    never finished and is done again. With ``redo_failed`` the error records are removed from
    the file too, so those lines run again.
    """
    ids: set[str] = set()
    if not os.path.exists(path):
        return ids
    kept: list[bytes] = []
    dropped = False
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                record = json.loads(raw)
                record_id, ok = str(record["id"]), record["ok"]
            except (ValueError, KeyError, TypeError):
                if raw.endswith(b"\n"):
                    raise ValueError(
                        f"{path} line {line_no} is not an llmguard output record; "
                        "--resume needs the output file of an earlier `llmguard run`"
                    ) from None
                dropped = True  # torn by a kill mid-write
                break
            if ok or not redo_failed:
                ids.add(record_id)
                kept.append(raw)
            else:
                dropped = True
    if dropped:
        with open(f"{path}.resuming", "wb") as out:
            out.writelines(kept)
        os.replace(f"{path}.resuming", path)
    return ids


class OutputWriter:
    """Writes records in input order (or as they finish), one flushed line each.

    Records that finish early are held until the lines before them are written. When more than
    :data:`MAX_HELD` are held, or the run stops early, they are written out of order, and
    :meth:`close` restores input order once every line is done.
    """

    __slots__ = ("_file", "_held", "_next", "_ordered", "_path", "out_of_order")

    def __init__(self, path: str, *, ordered: bool, append: bool) -> None:
        self._path = path
        self._file: IO[str] = open(path, "a" if append else "w", encoding="utf-8")
        self._ordered = ordered
        self._held: dict[int, str] = {}
        self._next = 0
        #: True once the file's records are not in input order (resume appends, spills).
        self.out_of_order = append and os.path.getsize(path) > 0

    def write(self, index: int, record: dict[str, Any]) -> None:
        """Write (or hold) the record of the ``index``-th line this run sends."""
        text = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        if self._ordered and index > self._next:
            self._held[index] = text
            if len(self._held) > MAX_HELD:
                self.spill()
            return
        self._file.write(text)  # the next in order, or late after a spill, or unordered
        if index == self._next:
            self._next += 1
            while self._next in self._held:
                self._file.write(self._held.pop(self._next))
                self._next += 1
        self._file.flush()

    def spill(self) -> None:
        """Write every held record now (out of order): on overflow and when the run stops."""
        if self._held:
            self.out_of_order = True
            self._file.writelines(self._held.values())
            # Lines before the spilled ones are written as they come from now on.
            self._next = max(self._next, max(self._held) + 1)
            self._held.clear()
            self._file.flush()

    def close(self, *, complete: bool) -> None:
        """Flush and close; once every line is done, put the file back in input order."""
        self.spill()
        self._file.close()
        if complete and self._ordered and self.out_of_order:
            sort_by_line(self._path)


def sort_by_line(path: str) -> None:
    """Rewrite an output file in input-line order (atomically), holding only offsets in memory."""
    offsets: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        pos = 0
        for raw in f:
            offsets.append((json.loads(raw)["line"], pos))
            pos += len(raw)
        offsets.sort()
        tmp = f"{path}.sorting"
        with open(tmp, "wb") as out:
            for _, offset in offsets:
                f.seek(offset)
                out.write(f.readline())
    os.replace(tmp, path)
