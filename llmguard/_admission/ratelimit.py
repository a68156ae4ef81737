"""Request and token quotas (RPM, RPS, TPM) with reservation, reconciliation, refunds and pauses.

The state lives behind :class:`RateLimitBackend` (in memory by default, Redis to share quotas
across processes); the :class:`RateLimit` layer keeps only the local FIFO line of waiters.

Why not aiolimiter: its waiters sit in a heap keyed by amount, so a stream of 50-token calls
overtakes a 6,000-token call forever (starvation); it cannot give back over-estimated tokens or
charge extra ones; it has no pause for Retry-After; and its leaky bucket admits more than the
quota within some 60 s window (see ``_window``). Here waiting is FIFO per key: only the head of
the line waits for room, and it is woken early when a reconciliation or refund frees some.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.check import callable_or_none, number
from .._core.classify import FailureKind, classify
from .._core.call import Call, Handler
from .._core.errors import AdmissionError, AdmissionTimeout, RequestTooLarge
from .._core.events import EventKind
from .._core.stream import Stream
from .._core.tokens import estimate_tokens, extract_usage
from .backend import MemoryBackend, RateLimitBackend
from .window import Quota
from .._core.public import public

__all__ = ["RateLimit", "RateLimitStats", "parse_duration"]

#: Seconds to pause admissions after a 429 that carries no Retry-After (OpenAI and Anthropic
#: send one almost always; when absent, one second lets a per-second quota refill without
#: idling a per-minute one for long).
DEFAULT_PAUSE = 1.0


@public
@dataclass(frozen=True, slots=True)
class RateLimitStats:
    """A snapshot of a :class:`RateLimit` (headroom is for one key, default None)."""

    requests_available: int
    tokens_available: int
    #: Tokens reserved by calls still in flight (not reconciled yet).
    reserved_tokens: int
    in_flight: int
    waiting: int
    admitted: int
    #: Calls refused: RequestTooLarge and AdmissionTimeout.
    rejected: int
    timed_out: int
    #: Reservations given back (the call never reached the provider).
    refunds: int
    #: 429s seen from the provider (each paused the key).
    rate_limited: int
    #: Seconds until admissions resume after a 429 (0.0 when not paused).
    paused_for: float


#: What a quota's error message suggests instead.
_NO_QUOTA = "; pass None for no such quota"


def _head(line: OrderedDict[int, list[asyncio.Future[None]]]) -> list[asyncio.Future[None]]:
    return next(iter(line.values()))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@public
class RateLimit:
    """Layer: admit a call only when every request and token quota has room for it.

    * ``rpm`` / ``rps`` / ``tpm``: at most that many requests (tokens) in any 60 s (1 s) window.
      The window is exact (a sliding log), so the whole quota is usable and never exceeded.
    * ``tokens(*args, **kwargs) -> int`` estimates a call's tokens (default
      :func:`llmguard.estimate_tokens`: messages plus ``max_tokens``); the estimate is reserved
      (``call.tokens``) and after the call reconciled to ``usage(result)`` (default: the result's
      ``usage.total_tokens``): unused tokens are given back, extra ones charged. A streamed
      answer holds its reservation until the stream ends and is reconciled to the usage in its
      final chunk (``stream_options={"include_usage": True}`` with OpenAI). A call that fails
      before reaching the provider (an inner layer's :class:`AdmissionError`) is refunded.
      ``charge="reserved"`` keeps every reservation as made instead: OpenAI-style providers
      charge a request's rate-limit tokens at admission from ``max_tokens`` and give nothing
      back, so reconciling down would admit more than they count.
    * ``margin`` seconds are added to every window: an admission keeps counting that much longer
      than the provider's window, which absorbs the gap between when llmguard admits a call and
      when the provider counts it (network latency, a busy event loop).
    * Waiting is FIFO per key: a large request is never overtaken by small ones.
    * A call that then waits in an inner queue (a ConcurrencyLimit below) is counted from when
      it leaves that queue, when the provider sees it, not from its admission: otherwise calls
      released from the queue late share the provider's window with the next ones admitted.
    * A 429 from the provider (:func:`llmguard.classify` says ``RATE_LIMITED``) pauses every
      admission of that key until its Retry-After (``DEFAULT_PAUSE`` = 1 s when absent).
    * ``burst`` (a fraction in (0, 1]) also caps each quota over a proportionally shorter
      window: ``burst=0.1`` with ``rpm=600`` admits at most 60 requests in any 6 s.
    * ``key(*args, **kwargs)`` gives each key (API key, tenant) its own quotas.
    * ``max_wait`` seconds of waiting raises :class:`AdmissionTimeout`; an estimate larger than
      the token quota raises :class:`RequestTooLarge` at once.
    * ``backend``: where the quota state lives (:class:`RateLimitBackend`; in memory by default).
    """

    __slots__ = (
        "quotas", "backend", "max_wait", "_tokens", "_usage", "_key", "_max_tokens", "_lines",
        "_reserved", "_in_flight", "_waiting", "_admitted", "_rejected", "_timed_out",
        "_refunds", "_rate_limited", "_instant", "_reconcile",
    )

    def __init__(
        self,
        *,
        rpm: int | None = None,
        rps: int | None = None,
        tpm: int | None = None,
        tokens: Callable[..., int] | None = None,
        usage: Callable[[Any], int | None] | None = None,
        max_wait: float | None = None,
        burst: float | None = None,
        margin: float = 0.0,
        charge: str = "actual",
        key: Callable[..., Hashable] | None = None,
        backend: RateLimitBackend | None = None,
    ) -> None:
        configured = (
            (number("rpm", rpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, False),
            (number("rps", rps, integer=True, optional=True, hint=_NO_QUOTA), 1.0, False),
            (number("tpm", tpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, True),
        )
        quotas = [Quota(n, window, tokens) for n, window, tokens in configured if n]
        if not quotas:
            raise ValueError("RateLimit needs a quota: pass rpm=, rps= and/or tpm=")
        if burst is not None:
            number("burst", burst, high=1, what="a fraction of each quota in (0, 1]")
            quotas += [
                Quota(max(1, int(q.limit * burst)), q.window * burst, q.tokens) for q in quotas
            ]
        number("margin", margin, low_open=False, unit=" of seconds",
               hint="; e.g. margin=0.5 for a per-minute quota over the network")
        if margin:  # each admission counts that much longer than the provider's window
            quotas = [Quota(q.limit, q.window + margin, q.tokens) for q in quotas]
        if charge not in ("actual", "reserved"):
            raise ValueError(f"charge must be 'actual' (reconcile to the usage reported) or "
                             f"'reserved' (keep the estimate, as OpenAI charges max_tokens), "
                             f"got {charge!r}")
        number("max_wait", max_wait, optional=True, unit=" of seconds",
               hint="; pass None to wait as long as it takes")
        for name, fn in (("tokens", tokens), ("usage", usage), ("key", key)):
            callable_or_none(name, fn)
        if backend is not None and not callable(getattr(backend, "reserve", None)):
            raise TypeError(
                f"backend must implement RateLimitBackend (reserve/reconcile/refund/...), e.g. "
                f"llmguard.backends.redis.RedisBackend, got {backend!r}; or None for in-memory"
            )
        #: The quotas enforced together (a call needs room in all of them).
        self.quotas = tuple(quotas)
        #: Where the quota state lives.
        self.backend: RateLimitBackend = MemoryBackend() if backend is None else backend
        # The in-memory reserve never suspends, so nobody can overtake a call between its reserve
        # and joining the line: it may skip the line. A remote reserve suspends (a round trip),
        # so with one every call goes through the line, which keeps FIFO within the process.
        self._instant = isinstance(self.backend, MemoryBackend)
        #: Seconds a call may wait before AdmissionTimeout (None: no bound).
        self.max_wait = max_wait
        token_limits = [q.limit for q in self.quotas if q.tokens]
        self._max_tokens = min(token_limits) if token_limits else None  # None: no token quota
        self._tokens = estimate_tokens if tokens is None else tokens
        self._usage = usage
        self._reconcile = charge == "actual"
        self._key = key
        # key -> waiters in arrival order, by id: one that gives up leaves in O(1) (a deque's
        # remove() made cancelling 10k waiters newest-first take seconds)
        self._lines: dict[Hashable, OrderedDict[int, list[asyncio.Future[None]]]] = {}
        self._reserved = self._in_flight = self._waiting = self._admitted = 0
        self._rejected = self._timed_out = self._refunds = self._rate_limited = 0

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        key = None
        if self._key is not None:  # publish it: inner layers (provider headers) use the same key
            key = call.partition = self._key(*call.args, **call.kwargs)
        tokens = 0
        if self._max_tokens is not None:
            tokens = self._tokens(*call.args, **call.kwargs)
            if tokens > self._max_tokens:
                self._rejected += 1
                raise call.rejected("rate_limit", RequestTooLarge(
                    f"the call needs an estimated {tokens} tokens but at most {self._max_tokens} "
                    f"are ever available ({self._describe()}); shorten the prompt or max_tokens, "
                    "or raise the token quota"
                ))
        ticket = await self._admit(call, key, tokens)
        if self._max_tokens is not None:
            call.tokens = tokens
        self._admitted += 1
        self._in_flight += 1
        self._reserved += tokens
        outer = call.on_wait

        async def recount() -> None:
            # An inner limiter queued the call after we admitted it: the provider sees it only
            # now. Give the reservation back and take one at this instant, waiting for room if
            # the window has none, so the provider's window never holds more than the quota.
            # It was admitted already, so it checks again ahead of the line.
            nonlocal ticket
            self.backend.refund(key, ticket)
            ticket = None
            wait, ticket = await self.backend.reserve(key, self.quotas, tokens)
            if ticket is None:
                ticket = await self._wait_in_line(key, tokens, wait, call)
            if outer is not None:
                await outer()

        call.on_wait = recount
        try:
            try:
                result = await call_next(call)
            finally:
                call.on_wait = outer
        except BaseException as exc:
            # Never sent (refused or queued below us, cancelled or timed out before sending):
            # the provider never saw it, so the reservation goes back. Sent: assume it counted.
            self._finish(key, ticket, tokens, tokens if call.sent else None)
            if isinstance(exc, Exception) and not isinstance(exc, AdmissionError):
                failure = classify(exc)
                if failure.kind is FailureKind.RATE_LIMITED:
                    self._rate_limited += 1
                    pause = DEFAULT_PAUSE if failure.retry_after is None else failure.retry_after
                    self.backend.pause(key, self.quotas, pause)
                    call.emit(EventKind.RATE_LIMIT_PAUSED, "rate_limit", delay=pause, error=exc)
            raise
        if isinstance(result, Stream):  # usage comes (if at all) in the final chunk
            result.defer(lambda _error: self._finish(
                key, ticket, tokens, self._actual(call, result.usage_chunk, tokens)))
        else:
            self._finish(key, ticket, tokens, self._actual(call, result, tokens))
        return result

    async def _admit(self, call: Call, key: Hashable, tokens: int) -> Any:
        """A reservation for ``tokens`` now: at once when nobody waits and there is room, else
        in line (recording the wait on the call for an outer limiter and for metrics)."""
        wait = None
        if self._lines.get(key) is None and self._instant:  # nobody waiting: allocates nothing
            wait, ticket = await self.backend.reserve(key, self.quotas, tokens)
            if ticket is not None:
                return ticket
        clock = asyncio.get_running_loop().time
        started = clock()
        ticket = await self._wait_in_line(key, tokens, wait, call)
        try:
            await call.waited(clock() - started, "rate_limit")
        except BaseException:
            self.backend.refund(key, ticket)
            raise
        return ticket

    def _actual(self, call: Call, result: Any, tokens: int) -> int:
        """Tokens the call used, read from a result or a stream's final chunk (or None)."""
        if self._max_tokens is None or result is None or not self._reconcile:
            return tokens
        if self._usage is not None:
            actual = self._usage(result)
        else:
            usage = extract_usage(result)
            if usage is None:
                return tokens
            if call.record.usage is None:
                call.record.usage = usage
            actual = usage.total_tokens
        return tokens if actual is None else int(actual)

    def _finish(self, key: Hashable, ticket: Any, reserved: int, actual: int | None) -> None:
        """Settle a reservation: ``actual`` tokens were used, or None for a refund."""
        self._in_flight -= 1
        self._reserved -= reserved
        if ticket is None:  # given back when an inner limiter queued it, not taken again
            return
        if actual is None:
            self._refunds += 1
            self.backend.refund(key, ticket)
        elif actual != reserved:
            self.backend.reconcile(key, ticket, actual)
        else:
            return
        line = self._lines.get(key)
        if line:  # room may have opened: let the head of the line look again
            _wake(_head(line)[0])

    async def _wait_in_line(self, key: Hashable, tokens: int, wait: float | None,
                            call: Call) -> Any:
        loop = asyncio.get_running_loop()
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = OrderedDict()
        waiter = [loop.create_future()]  # the current wake-up future of this waiter
        line[id(waiter)] = waiter
        self._waiting += 1
        timeout = asyncio.timeout(self.max_wait)
        try:
            async with timeout:
                while True:
                    if _head(line) is not waiter:
                        await waiter[0]  # set when the waiter ahead of us leaves the line
                        wait = None
                        continue
                    if wait is None:
                        wait, ticket = await self.backend.reserve(key, self.quotas, tokens)
                        if ticket is not None:
                            return ticket
                    future = waiter[0] = loop.create_future()
                    handle = loop.call_later(wait, _wake, future)
                    try:
                        await future  # the wait, or earlier if a refund or reconcile frees room
                    finally:
                        handle.cancel()
                    wait = None
        except TimeoutError:
            if not timeout.expired():
                raise
            self._rejected += 1
            self._timed_out += 1
            raise call.rejected("rate_limit", AdmissionTimeout(
                f"waited {self.max_wait:g} s for rate-limit room ({self._describe()}; estimate "
                f"{tokens} tokens, {len(line) - 1} calls waiting with it); raise max_wait or "
                "the quota, or send fewer or smaller calls"
            )) from None
        finally:
            self._waiting -= 1
            was_head = _head(line) is waiter
            del line[id(waiter)]
            if was_head and line:
                _wake(_head(line)[0])
            if not line:
                del self._lines[key]

    def _describe(self) -> str:
        return ", ".join(q.describe() for q in self.quotas)

    def observe_headers(self, headers: Mapping[str, str], *, partition: Hashable = None) -> None:
        """Tighten the quotas to what the provider reports in ``x-ratelimit-remaining-*`` and
        ``x-ratelimit-reset-*`` response headers (OpenAI durations like ``6m0s``, ``20ms``).

        Never loosens: the configured quotas still apply. ``partition`` is the ``key`` value.
        """
        get = getattr(headers, "get", None)
        if get is None:
            return
        for unit, tokens in (("requests", False), ("tokens", True)):
            remaining = get(f"x-ratelimit-remaining-{unit}")
            reset = parse_duration(get(f"x-ratelimit-reset-{unit}"))
            if remaining is None or reset is None:
                continue
            try:
                left = int(float(remaining))
            except ValueError:
                continue
            self.backend.cap(partition, self.quotas, tokens, left, reset)
        line = self._lines.get(partition)
        if line:
            _wake(_head(line)[0])

    def statistics(self, key: Hashable = None) -> RateLimitStats:
        """Counters for the whole layer; headroom and pause for ``key`` (default None)."""
        requests, tokens, paused = self.backend.headroom(key, self.quotas)
        return RateLimitStats(
            requests, tokens, self._reserved, self._in_flight, self._waiting, self._admitted,
            self._rejected, self._timed_out, self._refunds, self._rate_limited, paused,
        )

    def __repr__(self) -> str:
        return (
            f"<RateLimit {self._describe()} in_flight={self._in_flight} waiting={self._waiting} "
            f"reserved_tokens={self._reserved} backend={self.backend!r}>"
        )


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: Any) -> float | None:
    """Seconds from an OpenAI reset header: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)
