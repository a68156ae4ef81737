"""``POST /v1/chat/completions`` (JSON, or ``stream: true`` as SSE) and ``POST /v1/embeddings``.

A request whose client hangs up before it was sent upstream is dropped (``_ClientLeft``); a
streamed answer is relayed strictly (:mod:`.sse`) and cut when its client stops reading
(``[server] write_timeout``), so neither holds a model slot for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import llmguard as lg

from .._core.jsonenc import encoder
from .._upstream.http import ANSWERED
from .abandon import Abandon
from .errors import HTTPProblem, from_exception
from .sse import StreamBody, event, relay
from .tenants import Tenant
from .validate import read_json, validate_chat, validate_embeddings

__all__ = ["ChatRoutes", "Departures", "json_response"]

#: Seconds before a request starts watching for its client to leave (see ``_ClientLeft``).
WATCH_AFTER = 0.05

_JSON = "application/json"


#: One compact encoder for every answer, made once.
_encode = encoder(compact=True)


_CONTENT_TYPE = (b"content-type", _JSON.encode())


class JSONAnswer(Response):
    """A JSON answer whose header list is made here from pre-encoded pairs: Starlette's
    ``Response.__init__`` lower-cases and encodes every name and value of a ``dict`` and scans
    the list for ``content-length`` and ``content-type``, on every answer."""

    media_type = _JSON

    def __init__(self, body: bytes, status: int = 200,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status_code, self.body, self.background = status, body, None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _CONTENT_TYPE]
        if headers:
            self.raw_headers += headers


def json_response(obj: Any, status: int = 200,
                  headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """A compact JSON answer (``headers``: encoded ``(name, value)`` pairs)."""
    return JSONAnswer(_encode(obj).encode(), status, headers)


def passed_on(result: Any, headers: list[tuple[bytes, bytes]]) -> Response:
    """The answer of an upstream's ``result``: the bytes it came in when this task's upstream
    answered with this very object (:data:`~llmguard._upstream.http.ANSWERED`: no second
    encoding, as a pass-through proxy sends them), else the result encoded."""
    answered = ANSWERED.get()
    if answered is not None and answered[0] is result:
        return JSONAnswer(answered[1], 200, headers)
    return json_response(result, 200, headers)


#: The request headers the hot routes read, looked up in one pass over the ASGI scope's list
#: (Starlette's ``Headers.get`` scans and decodes the whole list for each name).
_READ = {b"authorization": "authorization", b"api-key": "api-key",
         b"x-priority": "x-priority", b"content-length": "content-length"}


def _headers(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.scope["headers"]:
        name = _READ.get(key)
        if name is not None and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A complete answer (a Fallback default, say) as the one chunk of a stream."""
    choices = [{"index": c.get("index", 0), "delta": c.get("message", {}),
                "finish_reason": c.get("finish_reason")} for c in completion.get("choices", [])]
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


def _priority(tenant: Tenant, headers: dict[str, str]) -> int:
    try:
        return tenant.priority(headers.get("x-priority"))
    except ValueError as exc:
        raise HTTPProblem(400, str(exc), "invalid_priority", param="X-Priority") from None


class _ClientLeft:
    """Context manager: an :class:`Abandon` fired when the client disconnects (its whole body
    was read, so the next ASGI message is the disconnect): a request it left before it was
    sent upstream is dropped instead of paying the provider for an answer nobody reads. The
    watch starts once the request is :data:`WATCH_AFTER` seconds old (a disconnect that came
    earlier is seen then all the same): the many requests answered sooner cost a dict entry,
    not a task or a timer each (:class:`Departures`)."""

    __slots__ = ("request", "abandon", "watcher", "departures")

    def __init__(self, request: Request, departures: Departures) -> None:
        self.request, self.abandon, self.departures = request, Abandon(), departures
        self.watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> Abandon:
        self.departures.add(self)
        return self.abandon

    def start(self) -> None:
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self.abandon.fire()

    def __exit__(self, *exc: object) -> None:
        self.departures.waiting.pop(self, None)
        if self.watcher is not None:
            self.watcher.cancel()


class Departures:
    """The requests not yet watched for their client leaving, oldest first, and one task that
    starts the watch of each once it is :data:`WATCH_AFTER` seconds old (it ends when none is
    left, and starts again with the next)."""

    __slots__ = ("waiting", "task")

    def __init__(self) -> None:
        self.waiting: dict[_ClientLeft, float] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, left: _ClientLeft) -> None:
        loop = asyncio.get_running_loop()
        self.waiting[left] = loop.time()
        if self.task is None:
            self.task = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                await asyncio.sleep(WATCH_AFTER)
                old = loop.time() - WATCH_AFTER
                for left, since in list(self.waiting.items()):
                    if since > old:
                        break  # the rest are younger
                    del self.waiting[left]
                    left.start()
        finally:
            self.task = None


class ChatRoutes:
    """The chat and embeddings handlers (mixed into :class:`~.app.Routes`, which gives
    ``gateway``, ``redact``, ``error`` and ``tenant_of``)."""

    gateway: Any
    redact: Any
    #: Requests to watch for their client leaving.
    departures: Departures

    async def chat(self, request: Request) -> Response:
        tenant: Tenant | None = None
        name = ""
        try:
            headers = _headers(request)
            tenant = self.tenant_of(request, headers)
            body = validate_chat(await read_json(request, self.gateway.config.max_body_bytes,
                                                 headers))
            name = body["model"]
            model = self._model(tenant, name)
            priority = _priority(tenant, headers)
            streaming = body.get("stream") is True
            wants_usage = False
            if streaming:  # always ask upstream for usage: the tenant's tokens are accounted
                options = body.get("stream_options") or {}
                wants_usage = options.get("include_usage") is True
                body["stream_options"] = {**options, "include_usage": True}
            with _ClientLeft(request, self.departures) as left:
                call = self.gateway.start(model, tenant, body, priority)
                result = await self.gateway.run(model, call, abandon=left)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style answer
            return self.error(exc, tenant, name)
        headers = self.gateway.tenants.raw_headers(tenant)
        price = (model.config.price_input, model.config.price_output)
        book = self.gateway.usage
        if not isinstance(result, lg.Stream):
            usage = call.record.usage  # read from the answer by the layers already
            book.record(tenant, name, 200, lg.extract_usage(result) if usage is None else usage,
                        price)
            if streaming:  # a non-streamed answer (a cache or default) sent as one chunk
                return self._streamed(self._one(result), headers)
            return passed_on(result, headers)
        stream = result
        stream.defer(lambda error: book.record(
            tenant, name, 200 if error is None or not isinstance(error, Exception) else 500,
            stream.usage, price))
        body_iter = relay(stream, bounded=self.gateway.bounded, include_usage=wants_usage,
                          on_error=self._stream_error)
        return self._streamed(body_iter, [*headers, (b"cache-control", b"no-cache")])

    def _streamed(self, body: AsyncIterator[bytes], headers: list[tuple[bytes, bytes]]
                  ) -> StreamBody:
        """An SSE answer of ``body`` with ``headers`` (encoded pairs)."""
        answer = StreamBody(body, media_type="text/event-stream",
                            write_timeout=self.gateway.config.write_timeout)
        answer.raw_headers += headers
        return answer

    def _model(self, tenant: Tenant | None, name: str) -> Any:
        """The tenant's model ``name``, else the OpenAI-style 404."""
        model = self.gateway.model_for(tenant, name)
        if model is None:
            raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                              "access to it.", "model_not_found", param="model")
        return model

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
            headers = _headers(request)
            tenant = self.tenant_of(request, headers)
            body = validate_embeddings(
                await read_json(request, self.gateway.config.max_body_bytes, headers))
            name = body["model"]
            model = self._model(tenant, name)
            priority = _priority(tenant, headers)
            with _ClientLeft(request, self.departures) as left:
                result = await self.gateway.call(model, tenant, body, priority, embed=True,
                                                 abandon=left)
        except Exception as exc:  # noqa: BLE001
            return self.error(exc, tenant, name)
        price = (model.config.price_input, 0.0)
        self.gateway.usage.record(tenant, name, 200, lg.extract_usage(result), price)
        return passed_on(result, self.gateway.tenants.raw_headers(tenant))
