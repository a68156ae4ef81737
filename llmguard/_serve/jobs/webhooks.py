"""Webhooks: the job's summary POSTed to its ``callback_url`` when it ends, signed, retried.

Each delivery carries ``X-Llmguard-Timestamp`` (Unix seconds) and ``X-Llmguard-Signature:
v1=<hex>``, the HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with the tenant's webhook secret
(``webhook_secret_env``): a receiver recomputes it (:func:`sign`) and refuses a timestamp older
than a few minutes, so a captured delivery cannot be replayed later. A delivery that fails (no
connection, or a status other than 2xx) is retried with exponential backoff for
``webhook_retry_for`` seconds; every attempt is recorded in the job's status. The secret is
never logged nor put in an attempt's record.

Callback URLs must be http(s), and by default must not resolve to a loopback, private,
link-local or otherwise non-public address, IPv4 addresses inside IPv6 ones included
(``[jobs] allow_private_callbacks = true`` allows them, for a receiver on the same network):
checked when the job is submitted and again on each attempt, on the very addresses the attempt
connects to (:mod:`.addresses`: no second resolution a rebinding name could answer otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import HTTPProblem
from .addresses import CallbackRefused, PinnedResolver, check_literal, resolve_public

__all__ = ["check_url", "deliver", "sign"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Llmguard-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _refused(url: str, why: str) -> HTTPProblem:
    return HTTPProblem(400, f"callback_url {url!r} is refused: {why}", "invalid_callback_url",
                       param="callback_url")


async def check_url(url: Any, allow_private: bool) -> str:
    """``url`` if it is an acceptable callback (see the module doc), else an HTTPProblem."""
    if not isinstance(url, str) or len(url) > 2048:
        raise HTTPProblem(400, "'callback_url' must be a URL string", "invalid_callback_url",
                          param="callback_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused(url, "only http:// and https:// URLs with a host are allowed")
    if parts.username or parts.password:
        raise _refused(url, "credentials in the URL are not allowed")
    if allow_private:
        return url
    try:
        await resolve_public(parts.hostname, parts.port or (443 if parts.scheme == "https"
                                                            else 80))
    except CallbackRefused as exc:
        raise _refused(url, str(exc)) from None
    return url


async def deliver(url: str, summary: dict[str, Any], secret: str, *, allow_private: bool,
                  timeout: float, retry_for: float, record: Any) -> bool:
    """POST ``summary`` to ``url`` until a 2xx answer or ``retry_for`` seconds passed; each
    attempt goes to ``await record(attempt)``. True once delivered."""
    import aiohttp

    body = json.dumps(summary, separators=(",", ":")).encode()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + retry_for
    delay = 0.5
    # Connect-time pinning: the addresses connected to are the ones checked (addresses.py).
    connector = aiohttp.TCPConnector(resolver=None if allow_private else PinnedResolver(),
                                     use_dns_cache=False)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                     connector=connector) as http:
        for attempt in range(1, 1_000_000):
            stamp = str(int(time.time()))
            headers = {"content-type": "application/json", "x-llmguard-timestamp": stamp,
                       "x-llmguard-signature": sign(secret, stamp, body),
                       "x-llmguard-job": summary["id"], "user-agent": "llmguard-webhooks"}
            entry: dict[str, Any] = {"attempt": attempt, "at": time.time(), "ok": False,
                                     "status": None, "error": None}
            try:
                await check_url(url, allow_private=True)  # its shape; addresses below
                if not allow_private:  # the connector skips the resolver for an IP literal
                    check_literal(urlsplit(url).hostname or "")
                async with http.post(url, data=body, headers=headers,
                                     allow_redirects=False) as response:
                    entry["status"] = response.status
                    entry["ok"] = 200 <= response.status < 300
                    if not entry["ok"]:
                        entry["error"] = f"the receiver answered HTTP {response.status}"
            except HTTPProblem as exc:
                entry["error"] = str(exc)
            except aiohttp.ClientConnectorError as exc:  # a refused address is named as such
                refused = exc.os_error if isinstance(exc.os_error, CallbackRefused) else exc
                entry["error"] = f"{type(refused).__name__}: {refused}"[:300]
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
            await record(entry)
            if entry["ok"]:
                return True
            if loop.time() + delay > give_up:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    return False
