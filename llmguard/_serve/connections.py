"""Connection limits uvicorn lacks: a deadline for each request's headers, and a cap on open
connections that makes room by closing idle ones.

Without them a client that opens connections and sends half a request line never finishes (no
key is needed for that) holds a file descriptor each for ever, and a few hundred lock every
tenant out once the process runs out of them. So every connection has ``header_timeout``
seconds to send a request's headers (then it is closed), and past ``max_connections`` the
oldest connection with no request in progress (half-sent headers, or an idle keep-alive) is
closed to make room, so a client with a real request always gets in; only if every connection
is busy with a request is the new one refused. The default cap leaves room under the process's
open-file limit (raised to its hard limit at start) for upstream and Redis sockets.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHTTP", "set_limits"]

#: Sockets and files kept free below the open-file limit (upstreams, Redis, logs).
RESERVE = 64
_limits = {"header_timeout": 10.0, "max_connections": 1024}


def set_limits(header_timeout: float, max_connections: int | None) -> int:
    """Set the limits of every connection this process serves from now on; returns the cap.
    ``None`` derives the cap from the open-file limit (first raised to the hard limit)."""
    if max_connections is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        max_connections = max(8, min(soft, 1 << 16) - RESERVE)
    _limits.update(header_timeout=header_timeout, max_connections=max_connections)
    return max_connections


class GuardedHTTP(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module doc (``http=`` of
    ``uvicorn.Config``). The header deadline is kept by one sweep a second over the open
    connections, not by a timer per request."""

    #: Loop time this connection's current request began (None: its headers are all in).
    _since: float | None = None
    _opened = 0.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened = self._since = self.loop.time()
        _sweep_soon(self.loop, self.connections)
        if len(self.connections) > _limits["max_connections"]:
            idle = [c for c in self.connections if c is not self and c._idle()]
            victim = min(idle, key=lambda c: c._opened) if idle else self
            victim.transport.close()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._since is None:  # the next request on a keep-alive connection
            self._since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._since = None
        super().on_headers_complete()


#: Event loops with a sweep scheduled.
_sweeping: set[int] = set()


def _sweep_soon(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    if id(loop) not in _sweeping:
        _sweeping.add(id(loop))
        loop.call_later(1.0, _sweep, loop, connections)


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Close connections whose request's headers are overdue; again in a second while any
    connection is open."""
    _sweeping.discard(id(loop))
    late = loop.time() - _limits["header_timeout"]
    for conn in list(connections):
        since = getattr(conn, "_since", None)
        if since is not None and since <= late and conn._idle() \
                and not conn.transport.is_closing():
            conn.transport.close()
    if connections:
        _sweep_soon(loop, connections)
