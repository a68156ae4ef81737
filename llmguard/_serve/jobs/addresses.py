"""Where a webhook may go: public addresses only, checked on the very addresses connected to.

A name is resolved once per attempt; every address it resolves to must be public, and the
connection goes to those checked addresses (:class:`PinnedResolver`, the resolver of the
delivery's aiohttp connector), never to a second resolution: a name that answers a public
address to the check and ``127.0.0.1`` to the connect (DNS rebinding) cannot reach loopback.

"Public" is ``ipaddress``'s ``is_global`` (not loopback, private, link-local, shared, reserved,
documentation...) and not multicast, and for IPv6 also the IPv4 address it carries, in every
form that routes to one: IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64
``64:ff9b::/96`` (and the local-use ``64:ff9b:1::/48``), 6to4 ``2002::/16`` and Teredo (its
client address): ``64:ff9b::a9fe:a9fe`` is 169.254.169.254, the cloud metadata service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver

__all__ = ["CallbackRefused", "PinnedResolver", "check_literal", "embedded_ipv4", "is_public",
           "resolve_public"]

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class CallbackRefused(OSError):
    """The callback's host is, or resolves to, an address that is not public."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (see the module doc), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low = ipaddress.IPv4Address(address.packed[12:])
    if address.packed[:12] == bytes(12) and int(low) > 1:  # ::a.b.c.d (not :: nor ::1)
        return low
    if any(address in net for net in _NAT64):
        return low
    return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address a callback may go to (see the module doc)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
    return True


def _refusal(host: str, address: Any) -> CallbackRefused:
    return CallbackRefused(f"{host} resolves to {address}, a loopback, private or otherwise "
                           "non-public address; set [jobs] allow_private_callbacks = true to "
                           "allow such receivers")


def check_literal(host: str) -> None:
    """:class:`CallbackRefused` when ``host`` is an IP address that is not public."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not is_public(literal):
        raise _refusal(host, literal)


async def resolve_public(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` of ``host`` when every address is public, else :class:`CallbackRefused`
    (also for a host that does not resolve)."""
    check_literal(host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused(f"{host} does not resolve ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not is_public(address):
            raise _refusal(host, address)
    return infos


class PinnedResolver(AbstractResolver):
    """aiohttp resolver: one resolution per connection, every address checked, and only the
    checked addresses handed to the connector."""

    async def resolve(self, host: str, port: int = 0,  # type: ignore[override]
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": info[4][0], "port": info[4][1], "family": info[0],
                 "proto": info[2], "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
                for info in await resolve_public(host, port)]

    async def close(self) -> None:
        pass
