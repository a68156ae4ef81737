"""Rows in, ``llmguard run`` records out: the same input shapes and the same record fields.

A row is one input line of ``llmguard run``: an OpenAI-style chat request ``{"model": ...,
"messages": [...], ...}`` or a Batch API line ``{"custom_id": ..., "body": {...}}``, with an
optional ``metadata`` object echoed into the record. Rows read by Ray Data may also carry a
``line`` number, or hold the raw JSON text of the line in one column (``text_column``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import llmguard as lg

from ..._runners import record
from ..._runners.lines import InputLine, parse_object, parse_text

__all__ = ["batch_digest", "describe", "make_record", "parse_row"]


def plain(value: Any) -> Any:
    """Arrow/numpy/pandas values as plain Python (lists, dicts, str, numbers, None)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is not None and not isinstance(value, (str, bytes)):
        return plain(tolist())
    return value


def batch_digest(rows: list[Any]) -> str:
    """What tells one batch's rows from another's: a digest of its content (a batch Ray runs
    again after an actor died has the same rows, so the same ids)."""
    canonical = json.dumps(plain(rows), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _hash_id(obj: Any, position: tuple[str, int] | None) -> str:
    # Identical rows are different rows (four samples of one prompt): the content alone would
    # give them one id, and the answered-rows store one record. Their place (batch, index)
    # tells them apart, and stays the same when Ray runs the batch again.
    canonical = json.dumps([obj, position], sort_keys=True, default=str, ensure_ascii=False)
    return "row-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_row(raw: Any, *, text_column: str | None = None, priority_field: str | None = None,
              position: tuple[str, int] | None = None) -> InputLine:
    """Turn one row (a dict of columns) into a :class:`InputLine`; a bad row gets a ``problem``.

    The id is the line's ``custom_id``, else ``line-<n>`` when the row has a ``line``
    column, else ``row-<hash of the row and position>``: ``position`` is its batch's
    :func:`batch_digest` and its index there, so identical rows get distinct ids."""
    raw = plain(raw)
    line = raw.get("line") if isinstance(raw, dict) else None
    line = line if isinstance(line, int) and not isinstance(line, bool) else None
    if text_column is not None:
        text = raw.get(text_column) if isinstance(raw, dict) else None
        try:
            obj = json.loads(text)
        except (TypeError, ValueError):  # the parser words the problem
            return parse_text(text, line, default_id=_hash_id({"text": text}, position))
    elif isinstance(raw, dict):  # Arrow fills columns a row lacks with None: not request fields
        obj = {k: v for k, v in raw.items() if v is not None and k != "line"}
    else:
        obj = raw
    default = _hash_id(obj if isinstance(obj, dict) else {"row": obj}, position)
    return parse_object(obj, line, priority_field=priority_field, default_id=default)


def describe(exc: BaseException) -> dict[str, str]:
    """An error as ``llmguard run`` records it: ``{kind, type, message}`` (redacted)."""
    return record.describe(exc)


def make_record(row: InputLine, *, response: Any = None, error: dict[str, str] | None = None,
                current: lg.CallRecord | None = None, elapsed: float | None = None,
                requested: str | None = None, cache: bool = False) -> dict[str, Any]:
    """The record of one row, field for field as ``llmguard run`` writes it (one format:
    :func:`llmguard._runners.record.make_record`)."""
    return record.make_record(row.id, row.line, row.metadata, response=response, error=error,
                              done=current, elapsed=elapsed, requested=requested, cache=cache)
