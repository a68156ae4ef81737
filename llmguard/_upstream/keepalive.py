"""Kept-alive HTTP/1.1 connections to one origin, for the JSON posts of ``HTTPUpstream``.

Why our own instead of aiohttp for these posts: aiohttp's client builds a request object, a
payload, a writer, a response object and a timer per call, about 80 us of CPU a request on
uvloop against 22 us for a protocol that writes one buffer and parses the answer with httptools
(both measured in one process against the same local server). The gateway and ``llmguard run``
make one post per call, so that difference was the largest cost of either that a bare script
of theirs (a Starlette proxy, a ``gather`` over one aiohttp session) does not pay twice.

Scope, kept small on purpose: ``POST`` with a complete body, answers of any framing
(``content-length``, chunked, or to the connection's end) and ``gzip``/``deflate`` encodings,
``http`` and ``https``. No timer: the caller bounds each request (``HTTPUpstream(bounded=True)``
only). A connection is reused only after a complete answer that allows it; one whose request
was cancelled or failed is closed. Streams and the rest stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import zlib
from typing import Any
from urllib.parse import unquote, urlsplit

from multidict import CIMultiDict  # aiohttp's: the headers' type with either client

from .._core.redact import redact_url

__all__ = ["IDLE", "Answer", "Origin", "Undelivered"]

#: Seconds an idle connection is kept: below the 5 s of uvicorn's and Node's servers, so we
#: never write to one the server is closing (LiteLLM's proxy lost a burst after a pause so).
IDLE = 4.0


class Undelivered(ConnectionError):
    """The connection failed before any byte of the answer: it could not be made, or the server
    closed or reset it (an idle one it was closing as we wrote). The server did not answer the
    request; a timeout is never this (there is no timer here)."""


class Answer:
    """One response: ``status``, ``headers`` (case-insensitive) and the decoded ``body``."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Connection(asyncio.Protocol):
    """One connection: at most one request at a time; ``waiter`` gets its :class:`Answer`."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        self.reusable = False
        self.answered = False  # a byte of the current request's answer came in
        self.idle_since = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - a malformed answer: this request fails
            self._fail(ConnectionError(f"malformed HTTP answer: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._complete(self.parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers)
        body = b"".join(self.body)
        self.headers, self.body = [], []
        self.reusable = keep_alive and not self.closed
        try:
            coding = headers.get("content-encoding", "identity").lower()
            if coding in ("gzip", "deflate", "x-gzip"):
                body = zlib.decompress(body, 47)  # 32 + 15: a gzip or zlib header, detected
            elif coding != "identity":
                raise ConnectionError(f"unsupported content-encoding {coding!r}")
        except (zlib.error, ConnectionError) as exc:
            self.reusable = False
            waiter.set_exception(ConnectionError(f"cannot decode the answer: {exc}"))
            return
        waiter.set_result(Answer(self.parser.get_status_code(), headers, body))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
        if self.headers and not framed:  # a body that ends with the connection: complete
            self._complete(False)
        else:
            lost = Undelivered if not self.answered else ConnectionError
            self._fail(lost(str(exc) if exc else "the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Origin:
    """Kept-alive connections to the origin of ``base_url`` (scheme, host, port), sending
    ``headers`` (``name: value`` pairs, e.g. the bearer key) with every request."""

    __slots__ = ("_head", "_host", "_idle", "_port", "_prefix", "_ssl", "_busy")

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
        secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if secure else 80)
        self._ssl: Any = ssl.create_default_context() if secure else None
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rpartition("@")[2]  # never send a user:password part as the Host
        headers = dict(headers)
        if parts.username is not None and "Authorization" not in headers:  # as aiohttp does
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        if any(c in f"{k}{v}" for k, v in headers.items() for c in "\r\n"):
            raise ValueError("a header name or value (the API key?) holds a line break")
        lines = [f"Host: {host}", "User-Agent: llmguard", "Accept-Encoding: gzip, deflate",
                 "Connection: keep-alive",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()

    async def post(self, path: str, body: bytes) -> Answer:
        """``POST`` ``body`` to ``path`` under the base URL; raises ``ConnectionError`` (or
        ``OSError``) when the connection fails before the whole answer is in."""
        conn = self._take()
        if conn is None:
            loop = asyncio.get_running_loop()
            try:
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None)
            except OSError as exc:  # refused, unreachable, no such host, TLS handshake
                raise Undelivered(f"cannot connect: {exc}") from exc
        conn.answered = False
        conn.waiter = asyncio.get_running_loop().create_future()
        self._busy.add(conn)
        try:
            conn.transport.write(b"".join((
                b"POST ", (self._prefix + path).encode("latin-1"), b" HTTP/1.1\r\n", self._head,
                str(len(body)).encode(), b"\r\n\r\n", body)))
            answer = await conn.waiter
        except BaseException:  # failed or cancelled mid-request: its state is unknown
            conn.reusable = False
            conn.transport.close()
            raise
        finally:
            self._busy.discard(conn)
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.transport.close()
        return answer

    def _take(self) -> _Connection | None:
        """The most recently used idle connection still open and fresh, else None."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and time.monotonic() - conn.idle_since < IDLE:
                return conn
            conn.transport.close()
        return None

    def close(self) -> None:
        """Close every connection (a request in flight fails with ``ConnectionError``)."""
        for conn in [*self._idle, *self._busy]:
            conn.transport.close()
        self._idle.clear()
