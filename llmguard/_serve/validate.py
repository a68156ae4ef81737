"""Request bodies: read within the size limit, parse, and check the fields the gateway relies on.

Only what the gateway itself needs is checked (the model, messages it can count, types of the
fields it reads); everything else passes through to the provider, which knows its own rules.
Each problem is an :class:`HTTPProblem` naming the field (OpenAI's ``param``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import HTTPProblem

__all__ = ["parse_json", "read_bytes", "read_json", "validate_chat", "validate_embeddings"]


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> HTTPProblem:
    return HTTPProblem(400, message, code, param=param)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes (checked before and while reading,
    so a large body is refused without being held in memory), 400 if it is not JSON."""
    body = parse_json(await read_bytes(request, limit))
    if not isinstance(body, dict):
        raise _bad(f"The request body must be a JSON object, got {type(body).__name__}",
                   code="invalid_json")
    return body


async def read_bytes(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes (before and while reading)."""
    too_large = HTTPProblem(413, f"Request body too large: the limit is {limit} bytes",
                            "request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON (any value); 400 if empty or not JSON."""
    if not raw.strip():
        raise _bad("The request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"The request body is not valid JSON ({exc})", code="invalid_json") from None
    return body


def _model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("you must provide a model parameter (a string)", "model")


def validate_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Check a chat completion request (raises :class:`HTTPProblem`)."""
    _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array of messages", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a string 'role'", f"messages[{i}]")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise _bad(f"'{field}' must be a positive integer, got {value!r}", field)
    return body


def validate_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Check an embeddings request (raises :class:`HTTPProblem`)."""
    _model(body)
    value = body.get("input")
    ok = isinstance(value, str) and value or (
        isinstance(value, list) and value and all(isinstance(v, (str, int, list)) for v in value))
    if not ok:
        raise _bad("'input' must be a non-empty string or array", "input")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise _bad(f"'dimensions' must be a positive integer, got {dims!r}", "dimensions")
    return body
