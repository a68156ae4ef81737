"""LoopbackServer: a simulated provider behind a real HTTP socket, spoken to by real SDKs.

::

    server = FixedWindowServer(rpm=10, window=2.0, latency=0.05)
    async with LoopbackServer(server) as http:
        client = AsyncOpenAI(base_url=http.base_url, api_key="test", max_retries=0)
        await client.chat.completions.create(model="m", messages=[...], max_tokens=16)

``POST /v1/chat/completions`` is answered with the OpenAI JSON shapes: a ``chat.completion``
(with ``usage``) and the server's ``x-ratelimit-*`` headers at admission, or an ``error`` body
with the status (429, 503) and headers the simulated server raised. ``POST /v1/messages`` speaks
Anthropic's Messages API the same way (``AsyncAnthropic(base_url=http.origin)``); both stream
as server-sent events with ``stream=True`` (the whole answer at once, with the headers the
simulated server set: as of the answer's end, or as the stream started on an
``InputOutputBucketServer``, as Anthropic's). HTTP/1.1 keep-alive, no pipelining (what httpx
does). A client that disconnects while its request is being served cancels it on the server
(aiohttp's ``handler_cancellation``), so the server records it as cancelled after arrival.
The server runs on the caller's event loop and reads its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from ._anthropic import message, sse
from ._provider import ProviderError, SimulatedProvider
from ._servers import admission_headers

__all__ = ["LoopbackServer"]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
_CODES = {429: "rate_limit_exceeded", 503: "server_overloaded"}


class LoopbackServer:
    """Serve ``provider`` (any :class:`SimulatedProvider`) on ``host:port`` (0: any free port)
    as an OpenAI-compatible endpoint; ``base_url`` is what ``AsyncOpenAI(base_url=...)`` takes.

    An async context manager: entering listens, leaving closes every connection.
    """

    __slots__ = ("provider", "host", "port", "requests", "_server", "_connections", "_closing")

    def __init__(self, provider: SimulatedProvider, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.provider = provider
        self.host = host
        self.port = port
        #: HTTP requests received (any path).
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def origin(self) -> str:
        """What ``AsyncAnthropic(base_url=...)`` takes (it adds ``/v1/messages``)."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._server is not None
        self._server.close()
        self._closing = True
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._connections.add(me)
        requests: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue()
        state = {"busy": False, "gone": False}

        async def read() -> None:  # the only reader, so EOF is seen even while serving
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
                while (request := await _read_request(reader)) is not None:
                    requests.put_nowait(request)
            state["gone"] = True
            if state["busy"]:  # the client left while its request was served: cancel it
                me.cancel()
            requests.put_nowait(None)

        reading = asyncio.ensure_future(read())
        try:
            while (request := await requests.get()) is not None:
                self.requests += 1
                state["busy"] = True
                try:
                    status, headers, body = await self._answer(*request)
                finally:
                    state["busy"] = False
                sse = isinstance(body, bytes)  # an event stream (Anthropic's stream=True)
                payload = body if sse else json.dumps(body).encode()
                kind = "text/event-stream" if sse else "application/json"
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                        f"content-type: {kind}", f"content-length: {len(payload)}",
                        *(f"{name}: {value}" for name, value in headers.items()), "", ""]
                writer.write("\r\n".join(head).encode() + payload)
                await writer.drain()
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # A disconnect (or closing the server) ends the connection, not the program; a task
            # of asyncio.start_server must not end cancelled (3.11 logs it as unhandled).
            if not (state["gone"] or self._closing):
                raise
        finally:
            self._connections.discard(me)
            reading.cancel()
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        route = path.split("?")[0].rstrip("/")
        messages = route.endswith("/v1/messages")  # Anthropic's Messages API
        if method != "POST" or not (messages or route.endswith("/chat/completions")):
            return 404, {}, _error(f"no route {method} {path}", "invalid_request_error", None)
        try:
            kwargs = json.loads(body or b"{}")
        except ValueError as exc:
            return 400, {}, _error(f"invalid JSON body: {exc}", "invalid_request_error", None)
        admission_headers.set(None)
        try:
            if messages:
                answer = await message(self.provider, **kwargs)
                return (200, admission_headers.get() or {},
                        sse(answer) if kwargs.get("stream") else answer)
            result = await self.provider.acompletion(**kwargs)
        except ProviderError as exc:
            if messages:
                kind = "rate_limit_error" if exc.status_code == 429 else "overloaded_error"
                return exc.status_code, exc.headers, {"type": "error", "error": {
                    "type": kind, "message": str(exc)}}
            kind = "requests" if exc.status_code == 429 else "server_error"
            return exc.status_code, exc.headers, _error(str(exc), kind,
                                                        _CODES.get(exc.status_code))
        result.setdefault("id", f"chatcmpl-{self.requests}")
        result.setdefault("created", int(time.time()))
        if kwargs.get("stream"):
            usage = (kwargs.get("stream_options") or {}).get("include_usage")
            return 200, admission_headers.get() or {}, _chunks(result, bool(usage))
        return 200, admission_headers.get() or {}, result

    def __repr__(self) -> str:
        return f"<LoopbackServer {self.base_url} requests={self.requests} {self.provider!r}>"


def _chunks(completion: dict[str, Any], usage: bool) -> bytes:
    """``completion`` as OpenAI streams it: its message in one ``chat.completion.chunk``, the
    finish reason in the next, the usage in a last one without choices (``include_usage``)."""
    choice = completion["choices"][0]
    head = {key: completion[key] for key in ("id", "created", "model")}
    chunks = [[{"index": 0, "delta": choice["message"], "finish_reason": None}],
              [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]]
    events = [{**head, "object": "chat.completion.chunk", "choices": choices}
              for choices in chunks + ([[]] if usage else [])]
    if usage:
        events[-1]["usage"] = completion["usage"]
    return "".join(f"data: {json.dumps(data)}\n\n" for data in events).encode() + \
        b"data: [DONE]\n\n"


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """One HTTP/1.1 request: ``(method, path, body)``, or None when the client closed."""
    line = await reader.readline()
    if not line.strip():
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    length = 0
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return method, path, await reader.readexactly(length) if length else b""
