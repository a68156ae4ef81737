"""A job's body to its lines, and one line's outcome to a record in ``llmguard run``'s format.

The body is either JSON (``{"requests": [...], "model", "callback_url", "priority",
"metadata", "mode", "batch_fallback"}``, or a bare list of requests) or JSONL (``application/jsonl`` /
``application/x-ndjson``): one request per line, each a chat request ``{"model", "messages"}``
or a Batch API line ``{"custom_id", "body": {...}}``, optionally with ``metadata`` -- the input
of ``llmguard run``. A bad line is recorded as that line's error (as ``llmguard run`` does); a
body that is not one of these shapes is a 400.

Lines are parsed by the one parser of ``llmguard run`` and Ray (``_runners/lines.py``); records
are written by their one writer (``_runners/record.py``).
"""

from __future__ import annotations

from typing import Any

from ..._runners.lines import SHAPE, InputLine, parse_object
from ..errors import HTTPProblem
from ..validate import parse_json

__all__ = ["JSONL_TYPES", "OPTIONS", "from_json", "from_jsonl"]

#: A job's options besides its requests and model: JSON body fields, or query parameters.
OPTIONS = ("callback_url", "priority", "metadata", "mode", "batch_fallback")

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines",
               "text/jsonl")


def parse_line(number: int, item: InputLine, default_model: str | None) -> dict[str, Any]:
    """One parsed input line as a stored line: ``{"line", "id", "request" | "problem",
    "metadata"}``, answered whole (no stream) with the job's model when it names none."""
    line: dict[str, Any] = {"line": number, "id": item.id, "metadata": item.metadata}
    request = item.request
    if request is None:
        line["problem"] = item.problem
        return line
    request.pop("stream", None)  # a job's line is answered whole
    request.pop("stream_options", None)
    if not isinstance(request.get("model"), str) or not request["model"]:
        if default_model is None:
            line["problem"] = (f"line {number} names no model; add \"model\" to the line or "
                               "pass ?model= (or set [jobs] default_model)")
            return line
        request["model"] = default_model
    line["request"] = request
    return line


def _check_count(count: int, max_lines: int) -> None:
    if count == 0:
        raise HTTPProblem(400, "the job has no requests; send at least one", "empty_job")
    if count > max_lines:
        raise HTTPProblem(413, f"the job has {count} requests; the limit is {max_lines} "
                          "([jobs] max_lines)", "too_many_lines")


def from_jsonl(raw: bytes, default_model: str | None, max_lines: int) -> list[dict[str, Any]]:
    """The lines of a JSONL body (blank lines skipped; numbering counts them, as ``llmguard
    run`` does)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(400, f"the JSONL body is not UTF-8 ({exc})", "invalid_jsonl") from None
    lines = []
    for number, chunk in enumerate(text.splitlines(), 1):
        if not chunk.strip():
            continue
        try:  # the gateway's JSON reader: not JSON, or nested too deeply, is that line's error
            item = parse_object(parse_json(chunk, f"line {number}"), number)
        except HTTPProblem as exc:
            item = InputLine(f"line-{number}", number, problem=f"{exc}; {SHAPE}")
        lines.append(parse_line(number, item, default_model))
        if len(lines) > max_lines:
            break
    _check_count(len(lines), max_lines)
    return lines


def from_json(body: Any, default_model: str | None, max_lines: int) -> tuple[
        list[dict[str, Any]], dict[str, Any]]:
    """The lines of a JSON body and its options (:data:`OPTIONS`)."""
    if isinstance(body, list):
        body = {"requests": body}
    if not isinstance(body, dict):
        raise HTTPProblem(400, "the body must be a JSON object {\"requests\": [...]} or a list "
                          f"of requests, got {type(body).__name__}", "invalid_json")
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise HTTPProblem(400, "'requests' must be an array of chat requests", "invalid_request",
                          param="requests")
    unknown = set(body) - {"requests", "model", *OPTIONS}
    if unknown:
        raise HTTPProblem(400, f"unknown field {sorted(unknown)[0]!r}; known: requests, model, "
                          f"{', '.join(OPTIONS)}", "invalid_request")
    model = body.get("model", default_model)
    if model is not None and not isinstance(model, str):
        raise HTTPProblem(400, "'model' must be a string", "invalid_request", param="model")
    _check_count(len(requests), max_lines)
    lines = [parse_line(i, parse_object(obj, i), model) for i, obj in enumerate(requests, 1)]
    return lines, {k: body[k] for k in OPTIONS if k in body}
