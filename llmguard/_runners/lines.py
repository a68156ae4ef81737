"""The one JSONL line parser: an input line of ``llmguard run``, a row of Ray Data, a line of a
job posted to ``llmguard serve`` are all read here.

A line is an OpenAI-style chat request ``{"model": ..., "messages": [...], ...}`` or a Batch API
line ``{"custom_id": ..., "body": {...}}`` (``url``/``method`` implied), with an optional
``metadata`` object echoed into its record. A bad line is not an exception: it becomes an
:class:`InputLine` with a ``problem``, recorded as that line's error, so nothing is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPE", "InputLine", "parse_object", "parse_text"]

#: What a line must look like (ends every problem message).
SHAPE = ('each line must be a chat request {"model": ..., "messages": [...]} or a Batch API '
         'line {"custom_id": ..., "body": {"messages": [...]}}')


@dataclass(slots=True)
class InputLine:
    """One input line: the request to send, or why it cannot be sent."""

    #: The record id: its ``custom_id`` when it has one, else ``line-<n>`` (or the caller's).
    id: str
    #: 1-based line number in the input when known.
    line: int | None = None
    #: Keyword arguments of the chat call (None when the line is invalid).
    request: dict[str, Any] | None = None
    #: Why the line cannot be sent (None when it is valid).
    problem: str | None = None
    #: The line's ``metadata``, echoed into its record.
    metadata: Any = None
    #: Admission priority read from the priority field (higher is served first).
    priority: int | None = None
    #: Set by a runner: position among the lines it sends (for output ordering).
    index: int = -1


def _where(line: int | None) -> str:
    return f"line {line}" if line is not None else "row"


def parse_text(text: Any, line: int | None, *, priority_field: str | None = None,
               default_id: str | None = None) -> InputLine:
    """One line of JSON text (see :func:`parse_object`); text that is not JSON is a problem."""
    try:
        obj = json.loads(text)
    except (TypeError, ValueError) as exc:
        return InputLine(_id(None, line, default_id), line,
                         problem=f"{_where(line)} is not valid JSON ({exc}); {SHAPE}")
    return parse_object(obj, line, priority_field=priority_field, default_id=default_id)


def _id(obj: Any, line: int | None, default: str | None) -> str:
    custom = obj.get("custom_id") if isinstance(obj, dict) else None
    if custom is not None:
        return str(custom)
    if line is not None:
        return f"line-{line}"
    return default or "row"


def parse_object(obj: Any, line: int | None, *, priority_field: str | None = None,
                 default_id: str | None = None) -> InputLine:
    """One decoded line as an :class:`InputLine`.

    ``priority_field`` names a number (at the top level or in the body) taken out of the request
    as its admission priority; ``default_id`` is the id of a line with neither ``custom_id``
    nor line number.
    """
    where = _where(line)
    item = InputLine(_id(obj, line, default_id), line)
    if not isinstance(obj, dict):
        item.problem = f"{where} is a JSON {type(obj).__name__}, not an object; {SHAPE}"
        return item
    item.metadata = obj.get("metadata")
    if isinstance(obj.get("body"), dict):
        request = dict(obj["body"])
    else:
        request = {k: v for k, v in obj.items() if k not in ("custom_id", "metadata")}
    if priority_field is not None:
        value = obj.get(priority_field, request.get(priority_field))
        request.pop(priority_field, None)  # a routing hint, not a provider parameter
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                item.problem = (f"{where}: priority field {priority_field!r} must be a number, "
                                f"got {value!r}")
                return item
            item.priority = int(value)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        item.problem = f"{where} has no non-empty 'messages' list; {SHAPE}"
        return item
    item.request = request
    return item
