"""What happens to ``llmguard run``'s output file once every line is recorded: it is put in
input order, and with ``--format openai-batch`` rewritten in the Batch API's output shape. Both
rewrite the file atomically (a copy, fsynced, then renamed), so a crash or a full disk leaves the
complete records of the run, only unsorted or in llmguard's shape."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = ["rewrite", "sort_by_line"]

#: The start of a record (``make_record``'s first two keys, ``json.dumps`` spacing): its line
#: number read without parsing the rest (the response) of every record.
_LINE = re.compile(rb'\{"id": "(?:[^"\\]|\\.)*", "line": (\d+),')


def rewrite(path: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Replace each record of ``path`` by ``change(record)``, atomically."""
    tmp = f"{path}.rewriting"
    with open(path, "rb") as f, open(tmp, "w", encoding="utf-8") as out:
        for raw in f:
            if raw.strip():
                out.write(json.dumps(change(json.loads(raw)), ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def sort_by_line(path: str) -> None:
    """Rewrite an output file in input-line order (atomically), holding only offsets in memory."""
    offsets: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        pos = 0
        for raw in f:
            # An openai-batch record has no line: it was put in order when converted, and
            # stays ahead of lines a later --resume --retry-failed appends.
            found = _LINE.match(raw)  # a record's prefix, as OutputWriter writes it
            offsets.append((int(found[1]) if found else json.loads(raw).get("line", 0), pos))
            pos += len(raw)
        offsets.sort()
        tmp = f"{path}.sorting"
        try:
            with open(tmp, "wb") as out:
                for _, offset in offsets:
                    f.seek(offset)
                    out.write(f.readline())
                out.flush()
                os.fsync(out.fileno())
        except BaseException:  # a full disk: the unsorted file stays, the partial copy goes
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
    os.replace(tmp, path)
