"""The kept-alive connections ``HTTPUpstream(bounded=True)`` posts over, against a raw loopback
server that frames its answers each way HTTP/1.1 allows, and fails the ways servers do."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable

import pytest

import llmguard as lg
from llmguard._upstream.errors import HTTPError, TransportError
from llmguard._upstream.http import HTTPUpstream
from llmguard._upstream.keepalive import Origin

pytestmark = pytest.mark.looptime(False)  # real sockets: real time

KEY = "sk-keepalive-test-0123456789abcdef"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi \ud800 é"}]}
ANSWER = {"id": "x", "choices": [{"message": {"role": "assistant", "content": "ok"}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}

#: (request number, body) -> the raw answer; None: hang up without one; b"CUT" + bytes: send
#: those bytes, then hang up.
Reply = Callable[[int, bytes], bytes | None]


def framed(body: bytes, *, status: str = "200 OK", extra: str = "",
           close: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}" + ("Connection: close\r\n" if close else ""))
    return head.encode() + b"\r\n" + body


class RawServer:
    """Answers each request with ``reply``; counts connections and keeps the requests seen."""

    def __init__(self, reply: Reply, hold: asyncio.Event | None = None) -> None:
        self.reply, self.connections, self.requests = reply, 0, []
        self.hold = hold  # the first answer waits for it
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((lines[0], headers, body))
                raw = self.reply(len(self.requests), body)
                if raw is None:  # no answer at all
                    return
                if self.hold is not None and len(self.requests) == 1:
                    await self.hold.wait()
                writer.write(raw.removeprefix(b"CUT"))
                await writer.drain()
                if raw.startswith(b"CUT"):
                    return
                if b"Connection: close" in raw or b"Content-Length" not in raw \
                        and b"chunked" not in raw:
                    return
        finally:
            writer.close()


def ok(number: int, body: bytes) -> bytes:
    return framed(json.dumps(ANSWER).encode())


async def post(server: RawServer, n: int = 1) -> list[object]:
    upstream = HTTPUpstream(server.base_url, KEY, bounded=True)
    try:
        return [await upstream.chat(dict(REQUEST)) for _ in range(n)]
    finally:
        await upstream.aclose()


async def test_one_connection_carries_every_request_with_the_path_key_and_body() -> None:
    async with RawServer(ok) as server:
        answers = await post(server, 3)
    assert answers == [ANSWER] * 3 and server.connections == 1
    line, headers, body = server.requests[0]
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == REQUEST  # a lone surrogate survives (ASCII-escaped)


@pytest.mark.parametrize("framing", ["chunked", "eof", "gzip", "deflate", "close"])
async def test_every_framing_and_encoding_of_an_answer_is_read_whole(framing: str) -> None:
    data = json.dumps(ANSWER).encode()

    def reply(number: int, body: bytes) -> bytes:
        if framing == "chunked":
            half = len(data) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (data[:half], data[half:]))
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                    + b"0\r\n\r\n")
        if framing == "eof":  # no length: the body ends with the connection
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + data
        if framing in ("gzip", "deflate"):
            packed = gzip.compress(data) if framing == "gzip" else zlib.compress(data)
            return framed(packed, extra=f"Content-Encoding: {framing}\r\n")
        return framed(data, close=True)

    async with RawServer(reply) as server:
        answers = await post(server, 2)
    assert answers == [ANSWER, ANSWER]
    closes = framing in ("eof", "close")
    assert server.connections == (2 if closes else 1)


async def test_an_error_status_is_an_http_error_with_its_headers_on_the_call() -> None:
    error_body = json.dumps({"error": {"message": "slow down", "code": "rate_limit_exceeded"}})

    def reply(number: int, body: bytes) -> bytes:
        return framed(error_body.encode(), status="429 Too Many Requests",
                      extra="Retry-After: 7\r\nx-ratelimit-remaining-requests: 0\r\n")

    async with RawServer(reply) as server:
        upstream = HTTPUpstream(server.base_url, KEY, bounded=True)
        call = lg.Call(upstream.chat, (), dict(REQUEST))
        try:
            with pytest.raises(HTTPError) as info:
                await upstream.chat(dict(REQUEST), call)
            answer = await upstream.chat(dict(REQUEST))  # the connection is reused after it
        except HTTPError:
            answer = None
        finally:
            await upstream.aclose()
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.headers["retry-after"] == "7" and error.headers["Retry-After"] == "7"
    assert call.response_headers["X-RateLimit-Remaining-Requests"] == "0"
    assert KEY not in str(error) and lg.classify(error).kind is lg.FailureKind.RATE_LIMITED
    assert answer is None and server.connections == 1


async def test_a_cut_answer_and_a_refused_connection_are_transport_errors() -> None:
    def reply(number: int, body: bytes) -> bytes | None:
        if number == 1:
            return None  # the server hangs up without answering
        if number == 2:  # cut mid-body
            return b"CUT" + framed(json.dumps(ANSWER).encode())[:-5]
        return framed(json.dumps(ANSWER).encode())

    async with RawServer(reply) as server:
        url = server.base_url
        upstream = HTTPUpstream(url, KEY, bounded=True)
        try:
            for _ in range(2):
                with pytest.raises(TransportError, match="127.0.0.1"):
                    await upstream.chat(dict(REQUEST))
            assert await upstream.chat(dict(REQUEST)) == ANSWER  # on a new connection
        finally:
            await upstream.aclose()
    assert server.connections == 3
    refused = HTTPUpstream(url, KEY, bounded=True)
    try:
        with pytest.raises(TransportError, match="connection to .* failed") as info:
            await refused.chat(dict(REQUEST))
    finally:
        await refused.aclose()
    assert lg.classify(info.value).kind is lg.FailureKind.CONNECTION and KEY not in str(info.value)


async def test_a_cancelled_request_never_leaves_its_connection_for_the_next() -> None:
    """Cancelled while waiting for its answer: that connection is closed, so the late answer
    can never be read as the next request's."""
    release = asyncio.Event()

    def reply(number: int, body: bytes) -> bytes:
        return framed(json.dumps({**ANSWER, "id": str(number)}).encode())

    async with RawServer(reply, hold=release) as server:
        origin = Origin(server.base_url, {"Content-Type": "application/json"})
        try:
            task = asyncio.ensure_future(origin.post("/chat/completions", b"{}"))
            while not server.requests:  # sent, and its answer held back
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()  # the late answer goes to the closed connection
            answer = await origin.post("/chat/completions", b"{}")
        finally:
            origin.close()
    assert json.loads(answer.body)["id"] == "2" and server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    def reply(number: int, body: bytes) -> bytes:
        return framed(json.dumps(ANSWER).encode(), close=number == 1)

    async with RawServer(reply) as server:
        origin = Origin(server.base_url, {})
        try:
            first = await origin.post("/chat/completions", b"{}")
            second = await origin.post("/chat/completions", b"{}")
        finally:
            origin.close()
    assert first.status == second.status == 200 and server.connections == 2


def test_origin_refuses_a_url_it_cannot_post_to() -> None:
    with pytest.raises(ValueError, match="base_url must be an http"):
        Origin("ftp://example.com/v1", {})


@pytest.mark.parametrize("url", ["ftp://user:s3cret@example.com/v1", "https://user:s3cret@/v1"])
def test_a_refused_url_shows_no_password(url) -> None:
    """The error naming a base_url it cannot post to hides its password (it printed it)."""
    with pytest.raises(ValueError, match="base_url must be an http") as refused:
        Origin(url, {})
    assert "s3cret" not in str(refused.value)


async def test_credentials_in_the_url_are_sent_as_basic_auth_never_as_the_host() -> None:
    async with RawServer(ok) as server:
        url = server.base_url.replace("http://", "http://user:p%40ss@")
        origin = Origin(url, {"Content-Type": "application/json"})
        try:
            await origin.post("/chat/completions", b"{}")
        finally:
            origin.close()
    _line, headers, _body = server.requests[0]
    assert headers["authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert "@" not in headers["host"] and "user" not in headers["host"]
    with pytest.raises(ValueError, match="line break"):
        Origin("http://127.0.0.1:1/v1", {"Authorization": "Bearer a\r\nX-Evil: 1"})
