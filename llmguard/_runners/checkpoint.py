"""JSONL checkpoint of a batch: one line per finished item, so a rerun skips what is done.

Durability policy: each line is written and flushed as its item finishes (it survives a crash of
the process); the file is fsynced when the batch ends, not per line (an fsync per item would cap
a batch at a few hundred items/s on most disks). A power loss can therefore lose the tail; the
worst case is that those items run again on resume.

A value that is not JSON-serialisable is stored as ``repr(value)`` with ``"repr": true``; on
resume the Outcome's value is that string. Return JSON-friendly values (or a dict) if you need
the real value back.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .jsonl import read_records

__all__ = ["Checkpoint"]


class Checkpoint:
    """Records read from, and appended to, one JSONL file (see the module docstring)."""

    __slots__ = ("path", "records", "_file", "_dead", "_dead_keys")

    def __init__(self, path: str | os.PathLike[str], dead_letter: str | os.PathLike[str] | None = None) -> None:
        #: The checkpoint file.
        self.path = os.fspath(path)
        #: key -> the last record written for it (later lines win: a failure then a retry's success).
        self.records: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            self._load()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        #: Keys already in the dead-letter file: a rerun with ``retry_failed=False`` meets the
        #: same failures again and must not append them once more.
        self._dead_keys: set[str] = set()
        self._dead = None
        if dead_letter is not None:
            dead_path = os.fspath(dead_letter)
            for _, key in read_records(dead_path, lambda r: str(r["key"]),
                                       corrupt=lambda n, e: f"{dead_path}:{n}: not a dead-letter "
                                                            f"record ({e!r})"):
                self._dead_keys.add(key)
            self._dead = open(dead_path, "a", encoding="utf-8")  # noqa: SIM115

    def _load(self) -> None:
        def parse(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            return str(record["key"]), record

        def corrupt(number: int, exc: Exception) -> str:
            return (f"{self.path}:{number}: not a checkpoint record ({exc!r}); the file is "
                    "corrupt. Fix or delete that line, or move the file away to start the batch "
                    "over.")

        for _, (key, record) in read_records(self.path, parse, corrupt=corrupt):
            self.records[key] = record

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it (crash-safe for the process, see the fsync policy)."""
        try:
            line = json.dumps(record, ensure_ascii=False)
        except (TypeError, ValueError):
            record = {**record, "value": repr(record.get("value")), "repr": True}
            line = json.dumps(record, ensure_ascii=False, default=repr)
        self._file.write(line + "\n")
        self._file.flush()
        self.records[record["key"]] = record
        if self._dead is not None and not record["ok"]:
            self.dead_letter(record)

    def dead_letter(self, record: dict[str, Any]) -> None:
        """Append a failed item's record to the dead-letter file, if one was given."""
        if self._dead is not None and str(record["key"]) not in self._dead_keys:
            self._dead_keys.add(str(record["key"]))
            self._dead.write(json.dumps(record, ensure_ascii=False, default=repr) + "\n")
            self._dead.flush()

    def close(self) -> None:
        """Flush, fsync and close the files."""
        for f in (self._file, self._dead):
            if f is not None and not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def __repr__(self) -> str:
        return f"<Checkpoint {self.path!r} records={len(self.records)}>"
