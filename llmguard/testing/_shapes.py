"""More simulated servers shaped like real limiters (see :mod:`._servers`):

* :class:`SlidingWindowServer`: at most ``rpm`` / ``tpm`` within any 60 s, counted at arrival;
  ``x-ratelimit-reset-*`` is when the oldest admission leaves the window.
* :class:`ProxyWindowServer`: shaped like LiteLLM's proxy: counters per **wall-clock minute**
  that admit ``rpm - 1`` requests (its off-by-one); 200s carry ``x-ratelimit-limit-*`` and
  ``x-ratelimit-remaining-*`` without a reset time; a 429 carries only
  ``llm_provider-retry-after: 60``, whenever in the minute it comes.

The wall clock is :func:`llmguard._core.clock.wall` (in step with the loop clock, so under
``looptime`` its minutes pass virtually too).
"""

from __future__ import annotations

from typing import Any

from .._core import clock
from ._quota import FixedWindow, SlidingWindow, check_quotas
from ._servers import QuotaServer

__all__ = ["ProxyWindowServer", "SlidingWindowServer"]


class SlidingWindowServer(QuotaServer):
    """At most ``rpm`` requests and ``tpm`` tokens within any ``window`` seconds, counted at
    arrival. A 429's Retry-After is when enough of the oldest admissions leave the window."""

    kind = "sliding window"

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None, window: float = 60.0,
                 **options: Any) -> None:
        super().__init__(window=window, **options)
        check_quotas(rpm, tpm)
        self.quotas = {"requests": rpm and SlidingWindow(rpm, window),
                       "tokens": tpm and SlidingWindow(tpm, window)}


class ProxyWindowServer(QuotaServer):
    """LiteLLM's proxy as users meet it: ``rpm - 1`` requests and ``tpm`` tokens per
    wall-clock minute (``window``), ``remaining = limit - used`` without a reset, and a 429
    whose only header is ``llm_provider-retry-after: 60`` (``window``)."""

    kind = "clock-minute proxy"
    processing_header = "x-litellm-response-duration-ms"

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None, window: float = 60.0,
                 **options: Any) -> None:
        super().__init__(window=window, **options)
        check_quotas(rpm, tpm)
        if rpm is not None and rpm < 2:
            raise ValueError(f"rpm must be at least 2 (the proxy admits rpm - 1), got {rpm}")
        #: The limits the proxy reports (it admits one request fewer).
        self.limits = {"requests": rpm, "tokens": tpm}
        self.quotas = {"requests": rpm and FixedWindow(rpm - 1, window),
                       "tokens": tpm and FixedWindow(tpm, window)}
        self._aligned = False

    def _align(self) -> None:
        """Put the windows' boundaries on the wall clock's minutes (first use, in a loop)."""
        if not self._aligned:
            self._aligned = True
            epoch = self._now() - clock.wall() % self.window
            for quota in self.quotas.values():
                if quota is not None:
                    quota.epoch = epoch

    def phase(self) -> float:
        """Seconds into the current window now."""
        self._align()
        return clock.wall() % self.window

    def headers(self, now: float) -> dict[str, str]:
        self._align()
        if not self.rate_limit_headers:
            return {}
        out = {}
        for unit, quota in self.quotas.items():
            if quota is not None:
                limit = self.limits[unit]
                used = quota.limit - quota.remaining(now)
                out[f"x-ratelimit-limit-{unit}"] = str(limit)
                out[f"x-ratelimit-remaining-{unit}"] = str(max(0, limit - used))
        return out

    def refusal_headers(self, now: float, wait: float) -> dict[str, str]:
        return {"llm_provider-retry-after": f"{self.window:g}"}

    def _admit(self, tokens: int) -> None:
        self._align()
        super()._admit(tokens)

    def ideal_time(self, n: int, **kwargs: Any) -> float:
        self._align()
        return super().ideal_time(n, **kwargs)
