"""The errors an upstream raises, shaped for :func:`llmguard.classify` (``status_code``,
``headers``, and for HTTP answers the server's structured ``code`` and ``body``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

__all__ = ["HTTPError", "Overloaded", "ProviderError", "ProviderTimeout", "RateLimited",
           "Stopped", "TransportError"]


class ProviderError(Exception):
    """An HTTP-style provider error: ``status_code`` and ``headers`` as the real SDKs carry."""

    def __init__(self, message: str, *, status_code: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = dict(headers)


class RateLimited(ProviderError):
    """429: a sliding-window RPM or TPM quota was exceeded; ``retry-after`` says when to retry."""


class Overloaded(ProviderError):
    """503: more calls in flight than the provider accepts."""


class HTTPError(Exception):
    """An error answer from an OpenAI-compatible server.

    ``code`` and ``body`` carry the server's structured error (``{"error": {"code": ...}}``), so
    ``insufficient_quota`` is told apart from a plain 429 without reading the message.
    """

    def __init__(self, message: str, *, status_code: int, headers: Any,
                 code: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers
        self.code = code
        self.body = body


class TransportError(ConnectionError):
    """The connection to the server failed or dropped (classified CONNECTION, retried)."""


class ProviderTimeout(TimeoutError):
    """The provider did not answer within the attempt's time (classified TIMEOUT, retried)."""


class Stopped(asyncio.CancelledError):
    """Raised instead of sending once an application is stopping (Ctrl-C): nothing more is
    sent, and the request is left unrecorded so a resumed run does it."""
