"""``/v1/ws``: chat requests and job events over one WebSocket, with the HTTP routes' auth.

The handshake carries the API key (``Authorization: Bearer``); a bad key closes with 1008. Each
client message is a JSON object with a client-chosen ``id``:

* ``{"type": "chat", "id", "request": {...}}``: answered by ``{"type": "chunk", "id", "data"}``
  messages (a non-streamed request gets one ``{"type": "completion", "id", "data"}``), then
  ``{"type": "done", "id"}``; a failure is ``{"type": "error", "id", "error": {...}}`` (the
  OpenAI body the HTTP route would send, with its ``status``). The tenant's quotas apply.
* ``{"type": "subscribe", "id", "job": "<job id>"}``: the job's events as
  ``{"type": "job_event", "id", "event", "data"}`` until its terminal event.

Requests run concurrently; messages of one request arrive in order.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import llmguard as lg

from ..errors import HTTPProblem, from_exception
from ..sse import Ending
from ..validate import parse_json, validate_chat

__all__ = ["ws_routes"]


class Socket:
    def __init__(self, routes: Any, service: Any) -> None:
        self.routes, self.service = routes, service

    async def serve(self, ws: WebSocket) -> None:
        try:
            tenant = self.routes.tenant_of(ws)
        except HTTPProblem as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        await ws.accept()
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[Any]] = set()

        async def send(obj: dict[str, Any]) -> None:
            async with lock:
                await ws.send_text(json.dumps(obj, separators=(",", ":"), default=str))

        limit = self.routes.gateway.config.max_body_bytes
        try:
            while True:
                text = await ws.receive_text()
                try:  # the same size and shape rules as an HTTP body
                    if len(text) > limit and len(text.encode()) > limit:
                        raise HTTPProblem(413, f"Message too large: the limit is {limit} bytes "
                                          "([server] max_body_bytes)", "request_too_large")
                    message = parse_json(text, "The message")
                except HTTPProblem as exc:
                    await send({"type": "error", "id": None, "status": exc.status, "error": {
                        "message": str(exc), "code": exc.code}})
                    continue
                if not isinstance(message, dict):
                    message = {}
                task = asyncio.get_running_loop().create_task(self._handle(tenant, message, send))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, tenant: Any, message: dict[str, Any], send: Any) -> None:
        ident = message.get("id")
        try:
            kind = message.get("type")
            if kind == "chat":
                await self._chat(tenant, ident, message.get("request"), send)
            elif kind == "subscribe":
                await self._subscribe(tenant, ident, message.get("job"), send)
            else:
                raise HTTPProblem(400, f"unknown message type {kind!r}; send chat or subscribe",
                                  "invalid_request", param="type")
        except Exception as exc:  # noqa: BLE001 - reported on the socket
            status, body, _headers = from_exception(exc, self.routes.redact)
            await send({"type": "error", "id": ident, "status": status,
                        "error": json.loads(body)["error"]})

    async def _chat(self, tenant: Any, ident: Any, request: Any, send: Any) -> None:
        if not isinstance(request, dict):
            raise HTTPProblem(400, "'request' must be a chat completion request object",
                              "invalid_request", param="request")
        body = validate_chat(request)
        gateway = self.routes.gateway
        model = gateway.model_for(tenant, body["model"])
        if model is None:
            raise HTTPProblem(404, f"The model {body['model']!r} does not exist or you do not "
                              "have access to it.", "model_not_found", param="model")
        name, price = body["model"], (model.config.price_input, model.config.price_output)
        if body.get("stream") is True:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        result = await gateway.call(model, tenant, body, tenant.default_priority)
        if not isinstance(result, lg.Stream):
            gateway.usage.record(tenant, name, 200, lg.extract_usage(result), price)
            await send({"type": "completion", "id": ident, "data": result})
        else:
            ending = Ending()
            try:
                async for chunk in result:
                    ending.see(chunk)
                    await send({"type": "chunk", "id": ident, "data": chunk})
                ending.check()  # a cut stream ends with an error, never "done"
            finally:
                await result.aclose()
            gateway.usage.record(tenant, name, 200, result.usage, price)
        await send({"type": "done", "id": ident})

    async def _subscribe(self, tenant: Any, ident: Any, job_id: Any, send: Any) -> None:
        job = await self.service.get(tenant.name, str(job_id))
        if job is None:
            raise HTTPProblem(404, f"No job {job_id!r}", "job_not_found", param="job")
        async for item in self.service.follow(job["id"], "0"):
            if item is not None:  # None: a quiet spell (the socket has its own pings)
                _cursor, name, data = item
                await send({"type": "job_event", "id": ident, "event": name, "data": data})


def ws_routes(routes: Any, service: Any) -> list[WebSocketRoute]:
    return [WebSocketRoute("/v1/ws", Socket(routes, service).serve)]
