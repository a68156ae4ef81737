"""The OpenAI-compatible HTTP upstream: ``/chat/completions`` and ``/embeddings`` of a base URL
(vLLM, llama.cpp, a proxy, OpenAI itself).

Why aiohttp, not the openai SDK or litellm: both go through httpx, which costs 7 to 12 ms of
CPU per call on a loopback server against 0.35 ms for aiohttp, so a batch would top out near
100 calls/s per core (below many accounts' quotas) and the gateway's own budget of under a
millisecond per request could not be met. An OpenAI-compatible server needs no translation,
only the HTTP call. When the caller bounds each request's time (``bounded=True``: the gateway's
Timeout layer, the run's ``--timeout``), plain answers go over :mod:`.keepalive`'s connections
instead, a quarter of aiohttp's CPU per request; streams stay on aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._core.jsonenc import encoder
from .._core.redact import redact, redact_url
from .errors import HTTPError, TransportError

if TYPE_CHECKING:
    from .._core.call import Call

__all__ = ["ANSWERED", "HTTPUpstream", "undelivered"]

#: ``(answer, the bytes it was parsed from)`` of the last JSON object answered in this task
#: over kept-alive connections: a gateway answering with that object unchanged (the same
#: object, nothing mutates answers) sends those bytes instead of encoding it again.
ANSWERED: ContextVar[tuple[Any, bytes] | None] = ContextVar("llmguard_answered", default=None)


def undelivered(exc: BaseException) -> bool:
    """True when ``exc``, raised before any response, means the server never processed the
    request: the connection could not be made, or the server closed or reset it (an idle
    keep-alive connection it was closing as we wrote). A timeout is not: the server may be
    working on it."""
    import errno

    import aiohttp

    from .keepalive import Undelivered

    if isinstance(exc, Undelivered):
        return True

    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError)):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno in (
        errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED)

#: One compact encoder for every request body, made once (aiohttp's ``json=`` builds a payload
#: and an encoder per request). ASCII output, so a lone surrogate in a prompt still encodes.
_encode = encoder(compact=True)


class HTTPUpstream:
    """An :class:`~llmguard._upstream.protocol.Upstream` posting JSON to ``{base_url}/...`` over
    one pooled aiohttp session (opened by :meth:`open`, or on first use). The bearer key is sent
    in a header and never appears in an error message or a repr.

    ``bounded``: the caller bounds every request's time (a Timeout layer, ``llmguard run``'s
    ``--timeout``). Then chat and embeddings go over :mod:`.keepalive`'s connections, which keep
    no timer and cost a quarter of aiohttp's CPU per request; streams stay on aiohttp, whose
    limit (300 s) bounds a stream past the first chunk a Timeout layer may bound alone."""

    __slots__ = ("_bounded", "_key", "_origin", "_session", "_urls", "base_url", "where")

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 bounded: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self._bounded = bounded
        self._key = api_key
        #: The base URL as messages show it (without a password).
        self.where = redact_url(self.base_url)
        self._session: Any = None
        self._origin: Any = None
        #: Parsed URLs by path, made once (a string is parsed into a ``yarl.URL`` per request).
        self._urls: dict[str, Any] = {}

    def secrets(self) -> list[str]:
        return [self._key] if self._key else []

    def _headers(self) -> dict[str, str]:
        """Sent with every request (made once, not per request)."""
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def open(self) -> Any:
        """The connections, made now: imports and setup out of the first admitted calls (an
        import inside the first call holds the opening burst past the time its rate limit
        counted it). Returns the aiohttp session (None when bounded: made for a first stream)."""
        if self._bounded:
            if self._origin is None:
                from .keepalive import Origin

                self._origin = Origin(self.base_url, self._headers())
            return self._session
        return self._aiohttp()

    def _aiohttp(self) -> Any:
        if self._session is None:
            import aiohttp

            from .keepalive import IDLE  # both pools drop an idle connection before servers do

            self._session = aiohttp.ClientSession(
                headers=self._headers(),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE))
        return self._session

    async def _post(self, path: str, request: dict[str, Any], call: Call | None) -> Any:
        """The response once its status is known (the caller reads and releases it)."""
        import aiohttp

        url = self._urls.get(path)
        if url is None:
            from yarl import URL

            url = self._urls[path] = URL(f"{self.base_url}{path}")
        try:
            response = await self._aiohttp().post(url, data=_encode(request).encode())
        except aiohttp.ClientConnectionError as exc:  # refused, reset
            raise self._failed(exc, call) from None
        if call is not None:
            call.response_headers = response.headers
        if response.status >= 400:
            try:
                raw = await self._read(response)
            finally:
                response.release()
            raise self._error(response.status, response.headers, raw)
        return response

    async def _read(self, response: Any) -> bytes:
        import aiohttp

        try:
            return await response.read()
        except aiohttp.ClientConnectionError as exc:  # dropped mid-answer
            raise self._failed(exc, None) from None

    def _error(self, status: int, headers: Any, raw: bytes) -> HTTPError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message, code = error.get("message"), error.get("code") or error.get("type")
        else:  # an HTML 502 from a proxy: keep the status, show the start of the body
            message, code = raw[:200].decode("utf-8", "replace").strip(), None
        return HTTPError(f"HTTP {status} from {self.where}: {redact(str(message))}",
                         status_code=status, headers=headers,
                         code=code if isinstance(code, str) else None, body=body)

    async def _json(self, path: str, request: dict[str, Any], call: Call | None) -> Any:
        if self._bounded:
            status, headers, raw = await self._kept_alive(path, request, call)
        else:
            response = await self._post(path, request, call)
            try:
                raw = await self._read(response)
            finally:
                response.release()
            status, headers = response.status, response.headers
        try:
            answer = json.loads(raw)
        except ValueError:
            raise HTTPError(f"HTTP {status} from {self.where}: the answer is not JSON "
                            f"({raw[:80]!r})", status_code=502, headers=headers) from None
        if self._bounded and raw[:1] == b"{":  # UTF-8 JSON, as sent: it may be sent on as is
            ANSWERED.set((answer, raw))
        return answer

    async def _kept_alive(self, path: str, request: dict[str, Any],
                          call: Call | None) -> tuple[int, Any, bytes]:
        """One post over :mod:`.keepalive`'s connections: status, headers and body."""
        origin = self._origin if self._origin is not None else (self.open() or self._origin)
        try:
            answer = await origin.post(path, _encode(request).encode())
        except (ConnectionError, OSError) as exc:  # refused, reset, cut mid-answer
            raise self._failed(exc, call) from None
        if call is not None:
            call.response_headers = answer.headers
        if answer.status >= 400:
            raise self._error(answer.status, answer.headers, answer.body)
        return answer.status, answer.headers, answer.body

    def _failed(self, exc: BaseException, call: Call | None) -> TransportError:
        """The error for a failed connection; a request the server never saw is marked unsent,
        so the quotas in front give its reservation back."""
        if call is not None and undelivered(exc):
            call.mark_unsent()
        return TransportError(f"connection to {self.where} failed: "
                              f"{type(exc).__name__}: {redact(str(exc))}")

    async def chat(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        return await self._json("/chat/completions", request, call)

    async def stream(self, request: dict[str, Any], call: Call | None = None,
                     /) -> AsyncIterator[Any]:
        response = await self._post("/chat/completions", {**request, "stream": True}, call)
        try:
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)
            # The body ended without [DONE]: the upstream (or a proxy) cut the stream.
            raise HTTPError(f"the stream from {self.where} ended without [DONE]; the answer "
                            "may be cut, retry the request", status_code=502,
                            headers=response.headers)
        finally:
            response.release()

    async def embed(self, request: dict[str, Any], call: Call | None = None, /) -> Any:
        return await self._json("/embeddings", request, call)

    async def aclose(self) -> None:
        if self._origin is not None:
            self._origin.close()
        if self._session is not None:
            await self._session.close()

    def __repr__(self) -> str:
        return f"<HTTPUpstream {self.where}>"
