"""The one JSONL resume reader: records of an earlier run, with torn-line repair.

Both resumable files of llmguard (``batch(checkpoint=...)`` and ``llmguard run``'s output) are
JSON Lines appended one record per finished item. A ``kill -9`` (or a full disk) can stop a
write half-way, leaving the last line unterminated and unparseable: that item never finished,
so the line is cut off (the file is truncated after the last good record) and the item runs
again. An unreadable line anywhere else is real corruption and an error naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["read_records"]

T = TypeVar("T")


def read_records(path: str, parse: Callable[[dict[str, Any]], T], *,
                 corrupt: Callable[[int, Exception], str]) -> Iterator[tuple[int, T]]:
    """Yield ``(line number, parse(record))`` for each record of ``path`` (none when absent).

    ``parse`` raises ``KeyError``/``TypeError``/``ValueError`` for a line that is not a record;
    ``corrupt(line_no, exc)`` is the message of the ``ValueError`` raised for such a line when
    it is not the torn tail. After the last line, a torn tail is truncated away, and a complete
    last record missing only its newline gets one, so the next append stays valid JSONL.
    """
    if not os.path.exists(path):
        return
    good = 0  # byte offset just after the last well-formed line
    repair: str | None = None
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            terminated = raw.endswith(b"\n")
            if not raw.strip():
                good += len(raw)
                continue
            try:
                value = parse(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                if terminated:
                    raise ValueError(corrupt(line_no, exc)) from None
                repair = "truncate"  # torn by a kill mid-write: that item runs again
                break
            good += len(raw)
            if not terminated:
                repair = "newline"
            yield line_no, value
    if repair == "truncate":
        with open(path, "r+b") as f:
            f.truncate(good)
    elif repair == "newline":
        with open(path, "ab") as f:
            f.write(b"\n")
