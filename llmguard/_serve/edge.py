"""What every request meets first (pure ASGI, a few attribute reads per request):

* an ``x-request-id`` header on every HTTP answer (``req_`` and 24 hex digits), as OpenAI's API
  sends, so a client (the openai SDK's ``_request_id``) can quote it;
* on an open gateway (no tenants: no key is asked), the Host and Origin check that keeps a web
  page from driving it from the user's browser. A page on another site may send requests to
  ``127.0.0.1`` (a form post, a WebSocket), and by DNS rebinding may even read the answers under
  its own name. So a request whose ``Host`` is a name other than ``localhost`` (an IP literal
  cannot be rebound), or whose ``Origin`` is not a loopback origin nor one of
  ``allow_origins`` (``--allow-origin``), is refused: 403, or a WebSocket closed before it
  opens. A gateway with tenants asks for a key instead, which such a page does not have;
* the hot routes (``POST`` chat completions and embeddings) handed straight to their handler.
  Starlette's stack (its error and exception middleware, the router's matching, the route's
  wrapper) adds a coroutine or a ``send`` wrapper each, several per request, for nothing these
  handlers need: they turn every exception into an OpenAI-shaped answer themselves. Every other
  route goes through Starlette.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from .errors import error_json

__all__ = ["Edge"]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_and_origin(scope: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    host = origin = None
    for key, value in scope["headers"]:
        if key == b"host" and host is None:
            host = value
        elif key == b"origin" and origin is None:
            origin = value
    return host, origin


class Edge:
    """ASGI middleware around the app (see the module doc). ``open_gateway`` turns the Host and
    Origin check on; ``allow_origins`` are origins it accepts besides loopback ones ("*": any);
    ``hot`` maps a path to the handler (request -> response) of its ``POST``."""

    def __init__(self, app: Any, *, open_gateway: bool, allow_origins: tuple[str, ...],
                 hot: dict[str, Any] | None = None) -> None:
        self.app = app
        self.hot = hot or {}
        self.check = open_gateway
        self.any_origin = "*" in allow_origins
        self.origins = {o.rstrip("/").lower() for o in allow_origins if o != "*"}
        self.hosts = {urlsplit(o).hostname for o in self.origins} - {None}
        #: Host header values found acceptable (a handful in practice: a cache, capped).
        self._good_hosts: set[bytes] = set()
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count()

    def refusal(self, scope: dict[str, Any]) -> str | None:
        """Why this request may not reach an open gateway, or None."""
        raw_host, raw_origin = _host_and_origin(scope)
        if raw_host is not None and raw_host not in self._good_hosts:
            host = raw_host.decode("latin-1")
            name = urlsplit(f"//{host}").hostname or ""
            if not (_is_ip(name) or _loopback(name) or name in self.hosts):
                return (f"Host {host!r} is refused: this gateway has no tenants (no API key), so "
                        "it answers only to localhost or an IP address; pass --allow-origin for "
                        "a browser app, or configure [tenants]")
            if len(self._good_hosts) < 64:
                self._good_hosts.add(raw_host)
        if raw_origin is not None and not self.any_origin:
            origin = raw_origin.decode("latin-1")
            name = urlsplit(origin).hostname or ""
            if origin.rstrip("/").lower() not in self.origins and not _loopback(name):
                return (f"Origin {origin!r} is refused: this gateway has no tenants (no API key), "
                        "so it answers only to pages on localhost; pass --allow-origin "
                        f"{origin} to allow that site, or configure [tenants]")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            return await self.app(scope, receive, send)
        if self.check:
            why = self.refusal(scope)
            if why is not None:
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
                    return None
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body",
                            "body": error_json(403, why, "origin_not_allowed")})
                return None
        if kind != "http":
            return await self.app(scope, receive, send)
        # Unique, not secret: a per-process random prefix and a counter (no syscall per request).
        request_id = f"req_{self._prefix}{next(self._count):012x}".encode()
        if scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.hot.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                response.raw_headers.append((b"x-request-id", request_id))
                return await response(scope, receive, send)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        return await self.app(scope, receive, send_with_id)
