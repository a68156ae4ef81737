"""Request bodies: read within the size limit, parse, and check the fields the gateway relies on.

Only what the gateway itself needs is checked (the model, messages it can count, types of the
fields it reads); everything else passes through to the provider, which knows its own rules.
Each problem is an :class:`HTTPProblem` naming the field (OpenAI's ``param``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import HTTPProblem

__all__ = ["MAX_DEPTH", "check_depth", "parse_json", "read_bytes", "read_json", "validate_chat",
           "validate_embeddings"]

#: How deeply arrays and objects may nest in a body (OpenAI's own JSON schemas stay far below):
#: deeper bodies are refused with 400 before anything recurses over them (the cache key, the
#: token estimate, the encoder sending it upstream would each raise RecursionError: a 500).
MAX_DEPTH = 100


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> HTTPProblem:
    return HTTPProblem(400, message, code, param=param)


async def read_json(request: Request, limit: int, headers: Any = None) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes (checked before and while reading,
    so a large body is refused without being held in memory), 400 if it is not JSON.
    ``headers``: the request's headers already looked up (``content-length``), if at hand."""
    body = parse_json(await read_bytes(request, limit, headers))
    if not isinstance(body, dict):
        raise _bad(f"The request body must be a JSON object, got {type(body).__name__}",
                   code="invalid_json")
    return body


async def read_bytes(request: Request, limit: int, headers: Any = None) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes (before and while reading).

    Read from the ASGI messages directly: Starlette's ``stream()`` is an async generator (a
    frame and a resumption per chunk) for what is one message in nearly every request."""
    declared = (request.headers if headers is None else headers).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size, receive = [], 0, request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, f"Request body too large: the limit is {limit} bytes",
                       "request_too_large")


def parse_json(raw: bytes | str, what: str = "The request body") -> Any:
    """``raw`` as JSON (any value); 400 if empty, not JSON, or nested deeper than
    :data:`MAX_DEPTH`. ``what`` names it in the message."""
    if not raw.strip():
        raise _bad(f"{what} is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
        # Nesting needs an opening bracket per level: few brackets, no walk (the common case).
        opening = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else (
            raw.count("[") + raw.count("{"))
        deep = opening > MAX_DEPTH and not check_depth(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"{what} is not valid JSON ({exc})", code="invalid_json") from None
    except RecursionError:  # deeper than the decoder's own recursion limit
        deep = True
    if deep:
        raise _bad(f"{what} nests arrays and objects more than {MAX_DEPTH} levels deep",
                   code="invalid_json")
    return body


def check_depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests lists and dicts at most ``limit`` levels deep (iterative: a
    check that recursed would fail the way it guards against)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return True


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
    if "stream" in body and body["stream"] is None:  # OpenAI's API takes null as the default
        del body["stream"]
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be true, false or null", "stream")
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
