"""More simulated servers shaped like real limiters (see :mod:`._servers`):

* :class:`SlidingWindowServer`: at most ``rpm`` / ``tpm`` within any 60 s, counted at arrival;
  ``x-ratelimit-reset-*`` is when the oldest admission leaves the window.
* :class:`ProxyWindowServer`: shaped like LiteLLM's proxy: counters per **wall-clock minute**
  that admit ``rpm - 1`` requests (its off-by-one); 200s carry ``x-ratelimit-limit-*`` and
  ``x-ratelimit-remaining-*`` without a reset time; a 429 carries only
  ``llm_provider-retry-after: 60``, whenever in the minute it comes. With
  ``reports="answered"`` its ``remaining`` counts answers that ended in the current minute
  (what LiteLLM's headers count: its success callback's per-minute counter), not admissions:
  a proxy that queues a burst reports much of it in the next minute. ``capacity=1`` with a
  small ``latency`` makes it a single worker that serves one request at a time, as a loaded
  proxy's event loop does, but counts each request as it arrives. ``workers=N`` queues
  instead: requests wait (first come, first served) for one of ``N`` workers and are counted
  when one takes them, in the minute of that moment, as LiteLLM's router counts a request
  when its pre-call check runs (``lowest_tpm_rpm_v2``'s per-minute key), which a loaded
  proxy's event loop reaches only after the requests queued before it: a burst sent late in
  a minute is counted largely in the next one. Its ``x-litellm-response-duration-ms`` times
  the request from arrival (``duration="request"``) or, ``duration="call"``, from when a worker
  takes it, as LiteLLM's times only the call to the deployment: the round trip less it is then
  the wait in the queue too, seconds under a burst. ``delivery`` seconds pass between an
  answer's headers being made and its leaving the proxy, in the order they were made, as a
  loaded proxy's event loop writes answers late (LiteLLM's with 1,024 in flight: 2-15 s after
  it made them, never out of order): headers made before a clock minute arrive after it.

The wall clock is :func:`llmguard._core.clock.wall` (in step with the loop clock, so under
``looptime`` its minutes pass virtually too).
"""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from typing import Any

from .._core import clock
from .._core.check import number
from ._quota import FixedWindow, SlidingWindow, TokenBucket, check_quotas
from ._servers import QuotaServer, admission_headers

__all__ = ["FixedWindowServer", "ProxyWindowServer", "SlidingWindowServer", "TokenBucketServer"]

#: When a worker took the request being served (``ProxyWindowServer(duration="call")``).
_taken: ContextVar[float | None] = ContextVar("taken", default=None)


class FixedWindowServer(QuotaServer):
    """At most ``rpm`` requests and ``tpm`` tokens per fixed window of ``window`` seconds
    (boundaries at ``epoch + i * window`` of loop time), counted when a request arrives.

    A 429's Retry-After is the time to the next boundary; ``x-ratelimit-reset-*`` likewise.
    """

    kind = "fixed window"

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None, window: float = 60.0,
                 epoch: float = 0.0, **options: Any) -> None:
        super().__init__(window=window, **options)
        check_quotas(rpm, tpm)
        self.quotas = {"requests": rpm and FixedWindow(rpm, window, epoch),
                       "tokens": tpm and FixedWindow(tpm, window, epoch)}


class TokenBucketServer(QuotaServer):
    """RPM and TPM buckets of ``rpm`` / ``tpm`` refilling continuously over ``window`` seconds,
    full at the start; each request takes 1 request and its prompt estimate plus ``max_tokens``
    at admission, whatever it then uses (OpenAI's accounting).

    A 429's Retry-After is when the emptiest bucket holds the request again;
    ``x-ratelimit-reset-*`` is the time until a bucket is full again (as OpenAI reports it).
    """

    kind = "token bucket"

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None, window: float = 60.0,
                 **options: Any) -> None:
        super().__init__(window=window, **options)
        check_quotas(rpm, tpm)
        self.quotas = {"requests": rpm and TokenBucket(rpm, window),
                       "tokens": tpm and TokenBucket(tpm, window)}


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
    whose only header is ``llm_provider-retry-after: 60`` (``window``). ``reports``:
    ``"admitted"`` (remaining counts the requests admitted in the minute) or ``"answered"``
    (the answers that ended in it, as LiteLLM's headers do)."""

    kind = "clock-minute proxy"
    processing_header = "x-litellm-response-duration-ms"

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None, window: float = 60.0,
                 reports: str = "admitted", workers: int | None = None,
                 duration: str = "request", delivery: float = 0.0, **options: Any) -> None:
        super().__init__(window=window, **options)
        check_quotas(rpm, tpm)
        number("delivery", delivery, low_open=False, unit=" of seconds")
        #: Seconds an answer waits to leave once its headers are made (first made, first out).
        self.delivery = delivery
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        #: Requests wait for one of these and are counted when one takes them (None: counted
        #: at arrival, served by processor sharing).
        self.workers = workers
        self._queue = asyncio.Semaphore(workers) if workers is not None else None
        if rpm is not None and rpm < 2:
            raise ValueError(f"rpm must be at least 2 (the proxy admits rpm - 1), got {rpm}")
        if reports not in ("admitted", "answered"):
            raise ValueError(f'reports must be "admitted" or "answered", got {reports!r}')
        if duration not in ("request", "call"):
            raise ValueError(f'duration must be "request" (timed from arrival) or "call" '
                             f'(from when a worker takes it), got {duration!r}')
        #: What its duration header times: the whole ``"request"`` or the ``"call"``.
        self.duration = duration
        #: The limits the proxy reports (it admits one request fewer).
        self.limits = {"requests": rpm, "tokens": tpm}
        self.quotas = {"requests": rpm and FixedWindow(rpm - 1, window),
                       "tokens": tpm and FixedWindow(tpm, window)}
        #: What ``remaining`` counts: per-minute counters of answers when ``"answered"``.
        self.reports = reports
        self._answers = {unit: FixedWindow(limit, window) for unit, limit in self.limits.items()
                         if limit is not None}
        self._aligned = False

    def _align(self) -> None:
        """Put the windows' boundaries on the wall clock's minutes (first use, in a loop)."""
        if not self._aligned:
            self._aligned = True
            epoch = self._now() - clock.wall() % self.window
            for quota in (*self.quotas.values(), *self._answers.values()):
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
        counters = self._answers if self.reports == "answered" else self.quotas
        for unit, quota in counters.items():
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

    async def _work(self, input_tokens: int, output: int, charged: int) -> None:
        if self._queue is None:
            await super()._work(input_tokens, output, charged)
            return
        async with self._queue:  # FIFO: counted when a worker takes it, not at arrival
            _taken.set(self._now())
            await super()._work(input_tokens, output, charged)

    async def _reply(self, headers: dict[str, str] | None, arrived: float) -> None:
        start = _taken.get() if self.duration == "call" else None
        start = arrived if start is None else start
        if self.delivery > 0:  # made now, written later: its duration was timed before the wait
            await asyncio.sleep(self.delivery)
            start += self.delivery
        await super()._reply(headers, start)

    def _answered(self, input_tokens: int, output: int, charged: int) -> None:
        now = self._now()
        for unit, counter in self._answers.items():
            counter.take(now, 1 if unit == "requests" else self._factored(charged))
        if self.reports == "answered":  # the headers are made as the answer goes out
            admission_headers.set(self.headers(now))

    def service_time(self, n: int, service: float | None = None) -> float:
        """Seconds its workers take to serve ``n`` requests back to back, quotas aside (each
        ``service`` s, default :meth:`service_seconds`): the bound its capacity sets (one
        service time without ``workers``)."""
        service = self.service_seconds() if service is None else service
        return service * (1 if self.workers is None else math.ceil(n / self.workers))

    def ideal_time(self, n: int, *, tokens: int = 0, start: float = 0.0,
                   service: float | None = None, in_flight: int | None = None) -> float:
        """As :meth:`QuotaServer.ideal_time`, its ``workers`` taking the requests in order: at
        least the quota bound and :meth:`service_time`; more when a minute's quota leaves the
        workers idle until the next boundary."""
        self._align()
        bounds = [b for b in (self.workers, in_flight) if b is not None]
        return super().ideal_time(n, tokens=tokens, start=start, service=service,
                                  in_flight=min(bounds) if bounds else None)
