"""``POST /v1/chat/completions`` (JSON, or ``stream: true`` as SSE) and ``POST /v1/embeddings``.

A request whose client hangs up before it was sent upstream is dropped (``_client_left``); a
streamed answer is relayed strictly (:mod:`.sse`) and cut when its client stops reading
(``[server] write_timeout``), so neither holds a model slot for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import llmguard as lg

from .abandon import Abandon
from .errors import HTTPProblem, from_exception
from .sse import StreamBody, event, relay
from .tenants import Tenant
from .validate import read_json, validate_chat, validate_embeddings

__all__ = ["ChatRoutes", "json_response"]

#: Seconds before a request starts watching for its client to leave (see ``_client_left``).
WATCH_AFTER = 0.05

_JSON = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON answer."""
    return Response(json.dumps(obj, separators=(",", ":")), status, headers, _JSON)


def _as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A complete answer (a Fallback default, say) as the one chunk of a stream."""
    choices = [{"index": c.get("index", 0), "delta": c.get("message", {}),
                "finish_reason": c.get("finish_reason")} for c in completion.get("choices", [])]
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


def _priority(tenant: Tenant, request: Request) -> int:
    try:
        return tenant.priority(request.headers.get("x-priority"))
    except ValueError as exc:
        raise HTTPProblem(400, str(exc), "invalid_priority", param="X-Priority") from None


@contextlib.contextmanager
def _client_left(request: Request) -> Iterator[Abandon]:
    """An :class:`Abandon` fired when the client disconnects (its whole body was read, so the
    next ASGI message is the disconnect): a request it left before it was sent upstream is
    dropped instead of paying the provider for an answer nobody reads. The watch starts after
    :data:`WATCH_AFTER` seconds: a disconnect that came earlier is seen then all the same, and
    the many requests answered sooner pay a timer, not a task."""
    abandon = Abandon()
    loop = asyncio.get_running_loop()
    watcher: list[asyncio.Task[None]] = []

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        abandon.fire()

    timer = loop.call_later(WATCH_AFTER, lambda: watcher.append(loop.create_task(watch())))
    try:
        yield abandon
    finally:
        timer.cancel()
        for task in watcher:
            task.cancel()


class ChatRoutes:
    """The chat and embeddings handlers (mixed into :class:`~.app.Routes`, which gives
    ``gateway``, ``redact``, ``error`` and ``tenant_of``)."""

    gateway: Any
    redact: Any

    async def chat(self, request: Request) -> Response:
        tenant: Tenant | None = None
        name = ""
        try:
            tenant = self.tenant_of(request)
            body = validate_chat(await read_json(request, self.gateway.config.max_body_bytes))
            name = body["model"]
            model = self.gateway.model_for(tenant, name)
            if model is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
            priority = _priority(tenant, request)
            streaming = body.get("stream") is True
            wants_usage = False
            if streaming:  # always ask upstream for usage: the tenant's tokens are accounted
                options = body.get("stream_options") or {}
                wants_usage = options.get("include_usage") is True
                body["stream_options"] = {**options, "include_usage": True}
            with _client_left(request) as left:
                result = await self.gateway.call(model, tenant, body, priority, abandon=left)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style answer
            return self.error(exc, tenant, name)
        headers = self.gateway.tenants.headers(tenant)
        price = (model.config.price_input, model.config.price_output)
        book = self.gateway.usage
        if not isinstance(result, lg.Stream):
            book.record(tenant, name, 200, lg.extract_usage(result), price)
            if streaming:  # a non-streamed answer (a cache or default) sent as one chunk
                return StreamBody(self._one(result), headers=headers,
                                  media_type="text/event-stream",
                                  write_timeout=self.gateway.config.write_timeout)
            return json_response(result, 200, headers)
        stream = result
        stream.defer(lambda error: book.record(
            tenant, name, 200 if error is None or not isinstance(error, Exception) else 500,
            stream.usage, price))
        body_iter = relay(stream, bounded=self.gateway.bounded, include_usage=wants_usage,
                          on_error=self._stream_error)
        return StreamBody(body_iter, headers={**headers, "cache-control": "no-cache"},
                          media_type="text/event-stream",
                          write_timeout=self.gateway.config.write_timeout)

    async def _one(self, completion: dict[str, Any]) -> AsyncIterator[bytes]:
        yield event(_as_chunk(completion))
        yield b"data: [DONE]\n\n"

    def _stream_error(self, exc: BaseException) -> bytes:
        status, body, _headers = from_exception(exc, self.redact)
        return b"data: " + body + b"\n\n"

    async def embeddings(self, request: Request) -> Response:
        tenant: Tenant | None = None
        name = ""
        try:
            tenant = self.tenant_of(request)
            body = validate_embeddings(
                await read_json(request, self.gateway.config.max_body_bytes))
            name = body["model"]
            model = self.gateway.model_for(tenant, name)
            if model is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
            priority = _priority(tenant, request)
            with _client_left(request) as left:
                result = await self.gateway.call(model, tenant, body, priority, embed=True,
                                                 abandon=left)
        except Exception as exc:  # noqa: BLE001
            return self.error(exc, tenant, name)
        price = (model.config.price_input, 0.0)
        self.gateway.usage.record(tenant, name, 200, lg.extract_usage(result), price)
        return json_response(result, 200, self.gateway.tenants.headers(tenant))
