"""Rows in, ``llmguard run`` records out: the same input shapes and the same record fields.

A row is one input line of ``llmguard run``: an OpenAI-style chat request ``{"model": ...,
"messages": [...], ...}`` or a Batch API line ``{"custom_id": ..., "body": {...}}``, with an
optional ``metadata`` object echoed into the record. Rows read by Ray Data may also carry a
``line`` number, or hold the raw JSON text of the line in one column (``text_column``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import llmguard as lg

from ..._runners import record

__all__ = ["Row", "batch_digest", "describe", "make_record", "parse_row"]

_SHAPE = ('each row must be a chat request {"model": ..., "messages": [...]} or a Batch API '
          'line {"custom_id": ..., "body": {"messages": [...]}}')


@dataclass(slots=True)
class Row:
    """One input row: the request to send, or why it cannot be sent."""

    #: The record id: ``custom_id``, else ``line-<n>``, else ``row-<hash of the row and its
    #: place in its batch>``.
    id: str
    #: 1-based input line number when known (``llmguard run --ray`` always knows it).
    line: int | None = None
    #: Keyword arguments of the chat call (None when the row is invalid).
    request: dict[str, Any] | None = None
    #: Why the row cannot be sent (None when it is valid).
    problem: str | None = None
    metadata: Any = None
    priority: int | None = None


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


def _row_id(obj: dict[str, Any], line: int | None, position: tuple[str, int] | None) -> str:
    if obj.get("custom_id") is not None:
        return str(obj["custom_id"])
    if line is not None:
        return f"line-{line}"
    # Identical rows are different rows (four samples of one prompt): the content alone would
    # give them one id, and the answered-rows store one record. Their place (batch, index)
    # tells them apart, and stays the same when Ray runs the batch again.
    canonical = json.dumps([obj, position], sort_keys=True, default=str, ensure_ascii=False)
    return "row-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_row(raw: Any, *, text_column: str | None = None, priority_field: str | None = None,
              position: tuple[str, int] | None = None) -> Row:
    """Turn one row (a dict of columns) into a :class:`Row`; a bad row gets a ``problem``.

    A row without ``custom_id`` or ``line`` is named by its content and ``position`` (its
    batch's :func:`batch_digest` and its index there), so identical rows get distinct ids."""
    raw = plain(raw)
    line = raw.get("line") if isinstance(raw, dict) else None
    line = line if isinstance(line, int) and not isinstance(line, bool) else None
    where = f"line {line}" if line is not None else "row"
    obj: Any = raw
    if text_column is not None:
        text = raw.get(text_column) if isinstance(raw, dict) else None
        try:
            obj = json.loads(text)
        except (TypeError, ValueError) as exc:
            row = Row(f"line-{line}" if line is not None else _row_id({"text": text}, None, position), line)
            row.problem = f"{where} is not valid JSON ({exc}); {_SHAPE}"
            return row
    if not isinstance(obj, dict):
        row = Row(f"line-{line}" if line is not None else _row_id({"row": obj}, None, position), line)
        row.problem = f"{where} is a JSON {type(obj).__name__}, not an object; {_SHAPE}"
        return row
    if text_column is None:  # Arrow fills columns a row lacks with None: not request fields
        obj = {k: v for k, v in obj.items() if v is not None and k != "line"}
    row = Row(_row_id(obj, line, position), line, metadata=obj.get("metadata"))
    if isinstance(obj.get("body"), dict):
        request = dict(obj["body"])
    else:
        request = {k: v for k, v in obj.items() if k not in ("custom_id", "metadata")}
    if priority_field is not None:
        value = obj.get(priority_field, request.get(priority_field))
        request.pop(priority_field, None)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                row.problem = (f"{where}: priority field {priority_field!r} must be a number, "
                               f"got {value!r}")
                return row
            row.priority = int(value)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        row.problem = f"{where} has no non-empty 'messages' list; {_SHAPE}"
        return row
    row.request = request
    return row


def describe(exc: BaseException) -> dict[str, str]:
    """An error as ``llmguard run`` records it: ``{kind, type, message}`` (redacted)."""
    return record.describe(exc)


def make_record(row: Row, *, response: Any = None, error: dict[str, str] | None = None,
                current: lg.CallRecord | None = None, elapsed: float | None = None,
                requested: str | None = None, cache: bool = False) -> dict[str, Any]:
    """The record of one row, field for field as ``llmguard run`` writes it (one format:
    :func:`llmguard._runners.record.make_record`)."""
    return record.make_record(row.id, row.line, row.metadata, response=response, error=error,
                              done=current, elapsed=elapsed, requested=requested, cache=cache)
