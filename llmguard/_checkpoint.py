"""Checkpoints for the batch runner: a JSONL file of finished items, so a rerun resumes."""

from __future__ import annotations

import json
import os
from typing import IO, Any

from ._cachekey import stable_digest

__all__ = ["Checkpoint", "CheckpointedError"]


class CheckpointedError(Exception):
    """An item's error restored from a checkpoint (the original exception is not kept)."""


class Checkpoint:
    """Appends one JSON line per finished item and knows which items a rerun may skip.

    Each line is flushed as it is written (a crash loses at most the line being written, which
    the next run ignores); it is not fsynced per line, so a power cut may lose the last few
    seconds, which are then simply redone. Values that JSON cannot encode are recorded by their
    ``repr`` (``"value_repr": true``), restored as that string.
    """

    __slots__ = ("path", "retry_failed", "_done", "_file")

    def __init__(self, path: str | os.PathLike[str], *, retry_failed: bool = True) -> None:
        self.path = os.fspath(path)
        self.retry_failed = retry_failed
        self._done: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            self._load()
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record_key = record["key"]
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                    continue  # torn last line from a crash mid-write: that item is redone
                raise ValueError(
                    f"checkpoint {self.path}, line {number} is not a checkpoint record ({exc}); "
                    "pass another checkpoint path or remove the damaged line"
                ) from None
            if record.get("ok") or not self.retry_failed:
                self._done[record_key] = record

    @staticmethod
    def default_key(index: int, item: Any) -> str:
        """Position plus a stable hash of the item, so an edited input is not mistaken."""
        try:
            return f"{index}:{stable_digest(item, 'item')[:16]}"
        except TypeError:
            return str(index)  # an item JSON cannot describe: its position alone

    def restore(self, index: int, key: str, item: Any) -> Any:
        """The recorded outcome of an item done in an earlier run, or None."""
        record = self._done.get(key)
        if record is None:
            return None
        from ._batch import Outcome

        error = None if record.get("ok") else CheckpointedError(record.get("error") or "failed")
        return Outcome(index, key, item, record.get("value"), error, 0, 0.0)

    def write(self, outcome: Any) -> None:
        record: dict[str, Any] = {"key": outcome.key, "index": outcome.index, "ok": outcome.ok}
        if outcome.ok:
            record["value"] = outcome.value
        else:
            record["error"] = f"{type(outcome.error).__name__}: {outcome.error}"
        try:
            line = json.dumps(record, ensure_ascii=False)
        except (TypeError, ValueError):
            record["value"], record["value_repr"] = repr(outcome.value), True
            line = json.dumps(record, ensure_ascii=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
