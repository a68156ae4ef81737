"""Simulated servers shaped like real providers' rate limits, recording what they saw: their
base, :class:`QuotaServer` (the shapes are in :mod:`._shapes`).

* :class:`FixedWindowServer`: requests and tokens counted at **arrival** in fixed clock windows
  (a per-minute counter keyed by the clock minute, as many providers and gateways do).
* :class:`TokenBucketServer`: RPM and TPM buckets refilling continuously, charging a request's
  prompt estimate plus ``max_tokens`` **up front** at admission and giving nothing back (OpenAI).

Both answer 429 (:class:`RateLimited`) with ``retry-after`` (unless ``retry_after=False``) and
OpenAI's ``x-ratelimit-limit/remaining/reset-requests`` and ``-tokens`` headers (unless
``rate_limit_headers=False``), and record every arrival and every request cancelled after it
arrived (the caller gave up on a request the server had already charged). They are
:class:`SimulatedProvider` s with a different admission: ``acompletion(**kwargs)`` and
``send_message`` as there, in-process under virtual time, or over HTTP with :class:`LoopbackServer`.
Concurrency is effectively unbounded by default (``capacity=10_000``): the quota is what binds.
``send_latency`` seconds each way (settable mid-run) put a network between caller and server:
a request is counted when it arrives; an answer says the server's own time on it in
``openai-processing-ms`` (``processing_header``), as OpenAI's do.
"""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from collections.abc import Callable
from typing import Any

from .._core.check import number
from .._core.tokens import estimate_tokens
from ._ideal import fresh, in_order
from ._provider import Overloaded, RateLimited, SimulatedProvider
from ._quota import Arrival, ServerStats, check_quotas, format_reset

__all__ = ["Arrival", "QuotaServer", "ServerStats", "check_quotas"]

#: The rate-limit headers of the request being admitted, for a transport to send back.
admission_headers: ContextVar[dict[str, str] | None] = ContextVar("admission_headers",
                                                                   default=None)


class QuotaServer(SimulatedProvider):
    """Base: a :class:`SimulatedProvider` whose admission is a set of quota policies.

    Subclasses set ``self.quotas``: ``{"requests": policy or None, "tokens": policy or None}``.
    A request is charged 1 request and ``charge(**kwargs)`` tokens (the prompt estimate plus
    ``max_tokens``, else the answer's length) at arrival; it is refused with 429 when any quota
    lacks room, and Retry-After says when the tightest one has room again.

    ``charge_factor`` multiplies that charge (rounded up): a server that counts more than a
    client's estimate (OpenAI counts a request from its characters, framing included, not from
    the tokens its usage later reports, which stay the estimate here).
    """

    kind = "quota"

    #: The header an answer says the server's own time on it in (ms; None: not said).
    processing_header: str | None = "openai-processing-ms"

    def __init__(self, *, retry_after: bool = True, rate_limit_headers: bool = True,
                 capacity: int = 10_000, latency: float = 1.0, charge_factor: float = 1.0,
                 send_latency: float | Callable[[Any], float] = 0.0, **options: Any) -> None:
        super().__init__(capacity=capacity, latency=latency, **options)  # its rpm/tpm stay None
        number("charge_factor", charge_factor, hint="; 1.0 charges what the estimate says")
        if not callable(send_latency):
            number("send_latency", send_latency, low_open=False, unit=" of seconds")
        #: Seconds each way between caller and server (or ``(rng) -> seconds`` per trip).
        self.send_latency = send_latency
        self.charge_factor = charge_factor
        self.retry_after = retry_after
        self.rate_limit_headers = rate_limit_headers
        self.quotas: dict[str, Any] = {}
        #: Every request that reached the server, in order.
        self.arrivals: list[Arrival] = []
        #: ``(arrived at, cancelled at)`` of every request cancelled after it arrived.
        self.cancelled: list[tuple[float, float]] = []
        self._last_completion: float | None = None
        #: Called with the headers of every answer and 429, in the caller's context, as an
        #: HTTP client reads them (e.g. ``RateLimit.observe_headers``) when served in-process.
        self.on_headers: list[Any] = []

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def charge(self, **kwargs: Any) -> int:
        """Tokens this server charges a request at admission (prompt estimate + max_tokens)."""
        reserve = kwargs.get("max_tokens")
        prompt = estimate_tokens(messages=kwargs.get("messages") or [], max_tokens=0)
        return self._factored(prompt + (reserve if isinstance(reserve, int)
                                        else self._output_for(kwargs)))

    def _factored(self, tokens: int) -> int:
        factor = self.charge_factor
        return tokens if factor == 1.0 else math.ceil(tokens * factor - 1e-9)

    def _amounts(self, tokens: int) -> dict[str, int]:
        return {"requests": 1, "tokens": tokens}

    def headers(self, now: float) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers describing the quotas at ``now``."""
        if not self.rate_limit_headers:
            return {}
        out = {}
        for unit, quota in self.quotas.items():
            if quota is not None:
                limit = getattr(quota, "limit", None) or quota.capacity
                out[f"x-ratelimit-limit-{unit}"] = str(limit)
                out[f"x-ratelimit-remaining-{unit}"] = str(quota.remaining(now))
                out[f"x-ratelimit-reset-{unit}"] = format_reset(quota.reset(now))
        return out

    def refusal_headers(self, now: float, wait: float) -> dict[str, str]:
        """The headers of a 429 at ``now`` when the tightest quota has room in ``wait`` s."""
        headers = self.headers(now)
        if self.retry_after and math.isfinite(wait):
            headers["retry-after"] = f"{math.ceil(wait * 1000) / 1000:g}"
        return headers

    def _admit(self, tokens: int) -> None:  # SimulatedProvider's admission, replaced
        now = self._now()
        self._calls += 1
        amounts = self._amounts(tokens)
        waits = {unit: quota.wait(now, amounts[unit])
                 for unit, quota in self.quotas.items() if quota is not None}
        blocked = {unit: wait for unit, wait in waits.items() if wait > 0}
        if blocked:
            self._rate_limited += 1
            self.arrivals.append(Arrival(now, tokens, 429))
            wait = max(blocked.values())
            headers = self.refusal_headers(now, wait)
            which = ", ".join(blocked)
            raise RateLimited(
                f"Rate limit reached for {which} ({self.kind}). "
                + (f"Please try again in {wait:.3f}s." if math.isfinite(wait)
                   else "Request too large for the quota."),
                status_code=429, headers=headers)
        if self._in_flight >= self.overload_at:
            self._overloaded += 1
            self.arrivals.append(Arrival(now, tokens, 503))
            raise Overloaded("The server is overloaded. Please retry.", status_code=503,
                             headers={"retry-after": "1"})
        for unit, quota in self.quotas.items():
            if quota is not None:
                quota.take(now, amounts[unit])
        self.arrivals.append(Arrival(now, tokens, 200))
        admission_headers.set(self.headers(now))

    async def _serve(self, input_tokens: int, output: int, charged: int) -> None:
        await self._travel()  # on the way: counted when it arrives
        arrived = self._now()
        try:
            await self._work(input_tokens, output, self._factored(charged))
        except RateLimited as exc:
            await self._reply(exc.headers, arrived)
            raise
        except asyncio.CancelledError:  # _admit ran (it never suspends): charged, then dropped
            self.cancelled.append((arrived, self._now()))
            raise
        self._last_completion = self._now()
        self._answered(input_tokens, output, charged)
        await self._reply(admission_headers.get(), arrived)

    async def _work(self, input_tokens: int, output: int, charged: int) -> None:
        """Admission (the quotas, :meth:`_admit`) and service of an arrived request: a
        server that queues (:class:`._shapes.ProxyWindowServer` with ``workers``) counts it
        when a worker takes it."""
        await super()._serve(input_tokens, output, charged)

    async def _travel(self) -> None:
        latency = self.send_latency
        seconds = latency(self._rng) if callable(latency) else latency
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _reply(self, headers: dict[str, str] | None, arrived: float) -> None:
        """The answer (or 429) goes back with the server's time on it, and its headers are
        read when it arrives."""
        if headers is not None and self.processing_header:
            headers[self.processing_header] = f"{(self._now() - arrived) * 1000:.0f}"
        await self._travel()
        self._tell(headers or {})

    def _answered(self, input_tokens: int, output: int, charged: int) -> None:
        """The answer ends now, before its headers are told: a server that settles a request
        then (and reports as of then) does it here."""

    def _tell(self, headers: dict[str, str]) -> None:
        for observe in self.on_headers:
            observe(headers)

    def ideal_time(self, n: int, *, tokens: int = 0, start: float = 0.0,
                   service: float | None = None, in_flight: int | None = None) -> float:
        """Seconds from ``start`` until the last of ``n`` equal requests (``tokens`` each, as
        :meth:`charge` counts them) completes at the soonest these quotas (and ``in_flight``:
        no more at once, each sent in order once one is free) allow, each taking ``service``
        s (default :meth:`service_seconds`). The yardstick for a client's wall time here."""
        service = self.service_seconds() if service is None else service
        amounts = self._amounts(tokens)
        quotas = [(q, amounts[unit]) for unit, q in self.quotas.items() if q is not None]
        if in_flight is not None:  # (on fresh ones: ``in_order`` uses them up)
            number("in_flight", in_flight, integer=True, hint="; the calls in flight at once, e.g. in_flight=32")
            return in_order([(fresh(q), a) for q, a in quotas], n, start, service, in_flight)
        admit = max((quota.earliest(n, amount, start) for quota, amount in quotas), default=start)
        return admit - start + service

    def service_seconds(self) -> float:
        """Seconds one request takes to serve: ``latency`` plus the output time of an int
        ``output_tokens``."""
        output = self.output_tokens if isinstance(self.output_tokens, int) else 0
        return self.latency + self.seconds_per_output_token * output

    def statistics(self) -> ServerStats:  # type: ignore[override]
        peaks = {}
        for unit, quota in self.quotas.items():
            amounts = [(a.at, 1 if unit == "requests" else a.tokens) for a in self.arrivals]
            peaks[unit] = quota.peak(amounts) if quota is not None else 0
        return ServerStats(
            len(self.arrivals), self._served, self._rate_limited, self._overloaded,
            len(self.cancelled), self._in_flight, self._max_in_flight,
            peaks.get("requests", 0), peaks.get("tokens", 0),
            self.arrivals[0].at if self.arrivals else None, self._last_completion)

    def __repr__(self) -> str:
        quotas = " ".join(f"{unit}={quota!r}" for unit, quota in self.quotas.items() if quota)
        return (f"<{type(self).__name__} {quotas} arrivals={len(self.arrivals)} "
                f"429s={self._rate_limited} cancelled={len(self.cancelled)}>")
