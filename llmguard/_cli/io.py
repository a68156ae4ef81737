"""Input lines to requests, and finished records to an output file that a later run can resume.

The output file is the checkpoint: every finished line is one JSON record carrying the input line
number and id, written and flushed the moment the line finishes, so ``--resume`` reads the ids
already there and skips them. A line is never written twice, and a torn last line (a kill
mid-write) is cut off before appending (the shared reader in ``_runners.jsonl``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from .._core.jsonenc import encoder
from .._runners.jsonl import read_records
from .._runners.lines import InputLine, parse_text
from .._runners.record import to_openai_batch
from .._runners.reorder import Reorder
from .finish import rewrite, sort_by_line

__all__ = ["OutputWriter", "done_ids", "read_jobs", "scan_input"]

#: Seconds between fsyncs of the output while records are being written (the power-loss bound;
#: a process kill loses nothing that was written).
FSYNC_INTERVAL = 1.0


def read_jobs(path: str, priority_field: str | None = None) -> Iterator[InputLine]:
    """Stream the input file's non-blank lines, parsed (:mod:`llmguard._runners.lines`), one at
    a time (constant memory).

    A UTF-8 byte-order mark is skipped and CRLF line ends are read as line ends.
    """
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line_no, text in enumerate(f, 1):
            if text.strip():
                yield parse_text(text, line_no, priority_field=priority_field)


def scan_input(path: str) -> tuple[int, dict[str, list[int]]]:
    """Lines with content, and the ids used by more than one line (id -> line numbers).

    Duplicate ids are refused before the run: ``--resume`` skips by id, so the second line of a
    pair would silently never run.
    """
    seen: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    count = 0
    for job in read_jobs(path):
        count += 1
        first = seen.setdefault(job.id, job.line)
        if first != job.line:
            duplicates.setdefault(job.id, [first]).append(job.line)
    return count, duplicates


def done_ids(path: str, *, redo_failed: bool = False) -> tuple[set[str], int]:
    """Ids already recorded in an output file, and how many of them failed, for ``--resume``.

    A torn last line (a kill mid-write) is cut off so appends stay valid JSONL; its line was
    never finished and is done again. With ``redo_failed`` the error records are removed from
    the file too, so those lines run again.
    """
    def parse(record: dict[str, Any]) -> tuple[str, bool]:
        if "custom_id" in record:  # --format openai-batch
            return str(record["custom_id"]), record["error"] is None
        return str(record["id"]), bool(record["ok"])

    def corrupt(line_no: int, exc: Exception) -> str:
        return (f"{path} line {line_no} is not an llmguard output record; --resume needs the "
                "output file of an earlier `llmguard run`")

    ids: set[str] = set()
    failed: list[int] = []
    for line_no, (record_id, ok) in read_records(path, parse, corrupt=corrupt):
        if ok or not redo_failed:
            ids.add(record_id)
            failed += [] if ok else [line_no]
        else:
            failed.append(-line_no)  # to remove
    drop = {-n for n in failed if n < 0}
    if drop:
        tmp = f"{path}.resuming"
        with open(path, "rb") as f, open(tmp, "wb") as out:
            out.writelines(raw for n, raw in enumerate(f, 1) if n not in drop)
        os.replace(tmp, path)
    return ids, sum(1 for n in failed if n > 0)


#: One encoder for every record, made once.
_encode = encoder(ascii=False, default=str)


class OutputWriter:
    """Writes each record the moment its line finishes, then restores input order at the end.

    Durability (documented in the README): every record is written and flushed to the operating
    system as soon as its line finishes, so it survives ``kill -9`` at once; the file is fsynced
    at most :data:`FSYNC_INTERVAL` seconds after a write (a power loss loses at most that much).
    Nothing is held in memory behind a slow line: after a kill, ``--resume`` re-sends only the
    lines that were in flight. When the run completes (and ``ordered``), the file is rewritten in
    input order, atomically. ``-o -`` writes to stdout: there the records are ordered in memory
    (a pipe cannot be sorted afterwards) with the shared reorder buffer.
    """

    __slots__ = ("_dirty", "_file", "_format", "_last_line", "_ordered", "_path", "_reorder",
                 "_synced", "out_of_order")

    def __init__(self, path: str, *, ordered: bool, append: bool,
                 format: str = "llmguard") -> None:
        self._path = path
        #: ``"llmguard"`` records, or ``"openai-batch"``: the Batch API's output shape, written
        #: once the run completes (llmguard records until then, so an interrupted run resumes).
        self._format = format
        self._ordered = ordered
        if path == "-":
            self._file: IO[str] = sys.stdout
            self._reorder: Reorder[str] | None = Reorder() if ordered else None
        else:
            self._file = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
            self._reorder = None
        #: True once the file's records are not in input order (resume appends, fast lines).
        self.out_of_order = append and path != "-" and os.path.getsize(path) > 0
        self._last_line = 0
        self._dirty = False
        self._synced = time.monotonic()

    def write(self, index: int, record: dict[str, Any]) -> None:
        """Write the record of the ``index``-th line this run sends (raises OSError on a full
        or unwritable disk)."""
        if self._reorder is not None and self._format == "openai-batch":
            record = to_openai_batch(record)  # stdout: nothing to rewrite at the end
        text = _encode(record) + "\n"
        if self._reorder is not None:
            self._reorder.put(index, text)
            while (ready := self._reorder.pop()) is not None:
                self._file.write(ready)
            self._file.flush()
            return
        if record["line"] < self._last_line:
            self.out_of_order = True
        self._last_line = max(self._last_line, record["line"])
        self._file.write(text)
        self._file.flush()
        self._dirty = True
        now = time.monotonic()
        if now - self._synced >= FSYNC_INTERVAL:
            self.sync(now)

    def sync(self, now: float | None = None) -> None:
        """fsync the output if anything was written since the last one (also on a timer)."""
        if self._dirty and self._file is not sys.stdout:
            os.fsync(self._file.fileno())
        self._dirty = False
        self._synced = time.monotonic() if now is None else now

    def close(self, *, complete: bool) -> None:
        """Flush, fsync and close; once every line is done, put the file in input order."""
        if self._file is sys.stdout:
            if self._reorder is not None:  # stopped early: what finished, in order
                while self._reorder.skip_gap():
                    while (ready := self._reorder.pop()) is not None:
                        self._file.write(ready)
            self._file.flush()
            return
        if not self._file.closed:
            self._file.flush()
            self.sync()
            self._file.close()
        if complete and self._ordered and self.out_of_order:
            sort_by_line(self._path)
        if complete and self._format == "openai-batch":
            rewrite(self._path, to_openai_batch)
