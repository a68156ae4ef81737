"""The quotas ``llmguard run`` paces to: given (``--rpm``/``--tpm``) or learned from the provider.

Without ``--rpm``/``--tpm``, the first answer's ``x-ratelimit-limit-requests`` and
``x-ratelimit-limit-tokens`` headers (OpenAI, Azure, LiteLLM's proxy, vLLM behind a gateway)
become the quotas. Until that first answer only one call is sent, so a small quota is not
overrun by the opening burst. ``remaining-*`` with ``reset-*`` tighten the quotas as answers
come (``RateLimit.observe_headers``); when ``reset-*`` is absent (LiteLLM's proxy), the first
``remaining-*`` is taken as what is left for the next 60 s (used by others before us), and the
limits alone pace the rest. 429s with ``retry-after`` / ``retry-after-ms`` /
``llm_provider-retry-after`` pause every admission (RateLimit and Retry read them).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from .._admission.ratelimit import RateLimit
from .._core.call import Call, Handler

__all__ = ["Limits"]


def _int(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


class Limits:
    """Layer: the run's rate limit (given, learned, or none), fed by every answer's headers."""

    __slots__ = ("_first", "_kwargs", "_seeded", "announce", "inner", "learn", "rpm", "source",
                 "tpm")

    def __init__(self, *, rpm: int | None, tpm: int | None, learn: bool,
                 announce: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        #: Quotas in use (None: none) and where they come from.
        self.rpm, self.tpm = rpm, tpm
        self.source = "--rpm/--tpm" if rpm or tpm else None
        #: Learn quotas from headers (only when none were given).
        self.learn = learn and not (rpm or tpm)
        self._kwargs = {"max_wait": None, **kwargs}  # waiting for quota is never a failure
        self.inner: RateLimit | None = (RateLimit(rpm=rpm, tpm=tpm, **self._kwargs)
                                        if rpm or tpm else None)
        self.announce = announce
        self._seeded = False
        # Until the first answer says the quotas, one call at a time.
        self._first: asyncio.Lock | None = asyncio.Lock() if self.learn else None

    def describe(self) -> str:
        if self.inner is None:
            return ("none yet (learned from the provider's x-ratelimit headers)" if self.learn
                    else "none")
        parts = [f"rpm={self.rpm}" if self.rpm else "", f"tpm={self.tpm}" if self.tpm else ""]
        return f"{' '.join(p for p in parts if p)} ({self.source})"

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        first = self._first
        if first is not None:
            async with first:
                if self._first is not None:  # still nothing learned: this call goes alone
                    try:
                        return await self._send(call, call_next)
                    finally:
                        self._first = None  # an answer (or failure) came: stop serialising
        return await self._send(call, call_next)

    async def _send(self, call: Call, call_next: Handler) -> Any:
        if self.inner is None:
            return await call_next(call)
        return await self.inner(call, call_next)

    def observe(self, headers: Any) -> None:
        """Read one answer's headers (called by the provider for every HTTP answer)."""
        get = getattr(headers, "get", None)
        if get is None:
            return
        if self.learn and self.inner is None:
            rpm = _int(get("x-ratelimit-limit-requests"))
            tpm = _int(get("x-ratelimit-limit-tokens"))
            if rpm or tpm:
                self.rpm, self.tpm, self.source = rpm, tpm, "learned from x-ratelimit headers"
                self.inner = RateLimit(rpm=rpm, tpm=tpm, **self._kwargs)
                if self.announce is not None:
                    self.announce(f"llmguard run: limits in use: {self.describe()}")
        if self.inner is None:
            return
        if get("x-ratelimit-reset-requests") is None and get("x-ratelimit-reset-tokens") is None:
            if self._seeded:
                return
            # No reset time: assume what remains now is all we get for the next minute (the
            # safe reading); after that our own sliding window paces to the limits.
            headers = {k: get(k) for k in ("x-ratelimit-remaining-requests",
                                           "x-ratelimit-remaining-tokens") if get(k) is not None}
            headers |= {"x-ratelimit-reset-requests": "60s", "x-ratelimit-reset-tokens": "60s"}
        self._seeded = True
        self.inner.observe_headers(headers)


def announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
