"""Request and token quotas (RPM, RPS, TPM) with reservation, reconciliation, refunds and pauses.

The state lives behind :class:`RateLimitBackend` (in memory by default, Redis to share quotas
across processes); the :class:`RateLimit` layer keeps only the local FIFO line of waiters.

Why not aiolimiter: its waiters sit in a heap keyed by amount, so a stream of 50-token calls
overtakes a 6,000-token call forever (starvation); it cannot give back over-estimated tokens or
charge extra ones; it has no pause for Retry-After; and its leaky bucket admits more than the
quota within some 60 s window (see ``window``). Here waiting is FIFO per key (``line``): only the
head of the line waits for room, woken early when a reconciliation or refund frees some. The
quotas are built in ``quotas``, provider headers read in ``headers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from .._core.call import Call, Handler
from .._core.check import callable_or_none, number
from .._core.classify import FailureKind, classify
from .._core.errors import AdmissionError, AdmissionTimeout, RequestTooLarge
from .._core.public import public
from .._core.stream import Stream
from .._core.tokens import estimate_tokens
from .backend import MemoryBackend, RateLimitBackend
from .headers import parse_duration, rate_limit_headers
from .line import WaitingLine
from .quotas import build_quotas, check_choice, used_tokens
from .rate_stats import RateLimitStats

__all__ = ["RateLimit", "RateLimitStats", "parse_duration"]

#: Seconds to pause admissions after a 429 that carries no Retry-After (OpenAI and Anthropic
#: send one almost always; when absent, one second lets a per-second quota refill without
#: idling a per-minute one for long).
DEFAULT_PAUSE = 1.0


@public
class RateLimit:
    """Layer: admit a call only when every request and token quota has room for it.

    * ``rpm`` / ``rps`` / ``tpm``: at most that many requests (tokens) in any 60 s (1 s) window.
      The window is exact (a sliding log), so the whole quota is usable and never exceeded.
    * ``refill="continuous"`` paces each quota as a bucket refilling at quota/window per second
      instead, as OpenAI and Anthropic enforce theirs (after the first burst, no waiting for
      whole windows); keep the default ``"window"`` for fixed- or sliding-window servers, which
      a bucket would exceed at a window's edge (README, "Rate limits").
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
        "_line", "_reserved", "_in_flight", "_admitted", "_rejected",
        "_refunds", "_rate_limited", "_take", "_reconcile", "_settle",
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
        refill: str = "window",
        key: Callable[..., Hashable] | None = None,
        backend: RateLimitBackend | None = None,
    ) -> None:
        quotas = build_quotas(rpm, rps, tpm, burst, margin, refill)
        check_choice("charge", charge)
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
        self.quotas = quotas
        #: Where the quota state lives.
        self.backend: RateLimitBackend = MemoryBackend() if backend is None else backend
        # In memory, admission never suspends (``take``): nobody can overtake a call between its
        # check and joining the line, so with nobody waiting it skips the line (and allocates
        # nothing beyond its entry). A remote reserve suspends (a round trip), so then every
        # call goes through the line, which keeps FIFO within the process.
        self._take = self.backend.take if isinstance(self.backend, MemoryBackend) else None
        #: Seconds a call may wait before AdmissionTimeout (None: no bound).
        self.max_wait = max_wait
        token_limits = [q.limit for q in quotas if q.tokens]
        self._max_tokens = min(token_limits) if token_limits else None  # None: no token quota
        self._tokens = estimate_tokens if tokens is None else tokens
        self._usage = usage
        # Read the usage after a call (only with a token quota and charge="actual").
        self._reconcile = charge == "actual" and self._max_tokens is not None
        # A bucket settles every reservation (it tracks those outstanding to bound refunds).
        self._settle = quotas[0].continuous
        self._key = key
        self._line = WaitingLine(self.backend, quotas, self._describe)
        self._lines = self._line.lines  # key -> its waiters (empty when nobody waits)
        self._reserved = self._in_flight = self._admitted = 0
        self._rejected = self._refunds = self._rate_limited = 0

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        key = None
        if self._key is not None:  # publish it: inner layers (provider headers) use the same key
            key = call.partition = self._key(*call.args, **call.kwargs)
        tokens = 0
        if self._max_tokens is not None:
            tokens = self._tokens(*call.args, **call.kwargs)
            if tokens > self._max_tokens:
                self._too_large(tokens)
        take = self._take
        ticket = None
        if take is not None and key not in self._lines:  # nobody waiting: no coroutine, no line
            ticket = take(key, self.quotas, tokens)
        if ticket is None:  # wait in line (a future, written out here: no frame per waiter)
            line = self._line
            loop = asyncio.get_running_loop()
            started = loop.time()
            future = line.join(key, tokens, self.max_wait)
            try:
                ticket = await future
            except BaseException:
                line.leave(key, future)
                raise
            try:  # record the wait (an outer rate limit may wait again there)
                await call.waited(loop.time() - started, "rate_limit")
            except BaseException:
                self.backend.refund(key, ticket)
                line.wake(key)
                raise
        if self._max_tokens is not None:
            call.tokens = tokens
        self._admitted += 1
        self._in_flight += 1
        self._reserved += tokens
        # What an inner limiter that queues the call calls back (``_Held.recount``). An object,
        # not a closure: a closure's cells would be made on every call, 7 of them in this frame.
        held = _Held(self, key, ticket, tokens, call.on_wait)
        call.on_wait = held.recount
        try:
            result = await call_next(call)
        except BaseException as exc:
            call.on_wait = held.outer
            self._failed(call, exc, key, held.ticket, tokens)
            raise
        call.on_wait = held.outer
        if isinstance(result, Stream):  # usage comes (if at all) in the final chunk
            self._defer(result, call, key, held.ticket, tokens)
        elif self._reconcile or self._settle:
            self._finish(call, key, held.ticket, tokens, result)
        else:  # nothing to reconcile: the reservation stands as made
            self._in_flight -= 1
            self._reserved -= tokens
        return result

    def _defer(self, stream: Stream, call: Call, key: Hashable, ticket: Any, tokens: int) -> None:
        stream.defer(lambda _error: self._finish(call, key, ticket, tokens, stream.usage_chunk))

    def _too_large(self, tokens: int) -> None:
        self._rejected += 1
        raise RequestTooLarge(
            f"the call needs an estimated {tokens} tokens but at most {self._max_tokens} are "
            f"ever available ({self._describe()}); shorten the prompt or max_tokens, or raise "
            "the token quota"
        )

    def _finish(self, call: Call, key: Hashable, ticket: Any, tokens: int, result: Any) -> None:
        """Settle a reservation after the call: reconciled to the tokens ``result`` (or a
        stream's final chunk) says were used."""
        self._in_flight -= 1
        self._reserved -= tokens
        if ticket is None:  # given back when an inner limiter queued it, not taken again
            return
        actual = tokens
        if self._reconcile and result is not None:
            actual = used_tokens(call, result, tokens, self._usage)
        if actual != tokens or self._settle:
            self.backend.reconcile(key, ticket, actual)
            if self._lines:  # room may have opened: let the head of the line look again
                self._line.wake(key)

    def _failed(self, call: Call, exc: BaseException, key: Hashable, ticket: Any,
                tokens: int) -> None:
        """Settle a reservation after the call failed, and pause the key after a 429."""
        self._in_flight -= 1
        self._reserved -= tokens
        if ticket is not None:
            # Never sent (refused or queued below us, cancelled or timed out before sending):
            # the provider never saw it, so the reservation goes back. Sent: it counted.
            if not call.sent:
                self._refunds += 1
                self.backend.refund(key, ticket)
                self._line.wake(key)
            elif self._settle:
                self.backend.reconcile(key, ticket, tokens)
                self._line.wake(key)
        if isinstance(exc, Exception) and not isinstance(exc, AdmissionError):
            failure = classify(exc)
            if failure.kind is FailureKind.RATE_LIMITED:
                self._rate_limited += 1
                pause = DEFAULT_PAUSE if failure.retry_after is None else failure.retry_after
                self.backend.pause(key, self.quotas, pause)

    def _describe(self) -> str:
        return ", ".join(q.describe() for q in self.quotas)

    def observe_headers(self, headers: Mapping[str, str], *, partition: Hashable = None) -> None:
        """Tighten the quotas to what the provider reports in ``x-ratelimit-remaining-*`` and
        ``x-ratelimit-reset-*`` response headers (OpenAI durations like ``6m0s``, ``20ms``).

        Never loosens: the configured quotas still apply. ``partition`` is the ``key`` value.
        """
        for tokens, left, reset in rate_limit_headers(headers):
            self.backend.cap(partition, self.quotas, tokens, left, reset)
        self._line.wake(partition)

    def statistics(self, key: Hashable = None) -> RateLimitStats:
        """Counters for the whole layer; headroom and pause for ``key`` (default None)."""
        requests, tokens, paused = self.backend.headroom(key, self.quotas)
        return RateLimitStats(
            requests, tokens, self._reserved, self._in_flight, self._line.waiting, self._admitted,
            self._rejected + self._line.timed_out, self._line.timed_out, self._refunds,
            self._rate_limited, paused,
        )

    def __repr__(self) -> str:
        return (
            f"<RateLimit {self._describe()} in_flight={self._in_flight} "
            f"waiting={self._line.waiting} "
            f"reserved_tokens={self._reserved} backend={self.backend!r}>"
        )


class _Held:
    """A reservation while its call is inside the layer: ``recount`` is the ``call.on_wait``
    an inner limiter calls when it let the call go after a wait."""

    __slots__ = ("layer", "key", "ticket", "tokens", "outer")

    def __init__(self, layer: RateLimit, key: Hashable, ticket: Any, tokens: int,
                 outer: Callable[[], Awaitable[None]] | None) -> None:
        self.layer, self.key, self.ticket, self.tokens, self.outer = layer, key, ticket, tokens, outer

    async def recount(self) -> None:
        # An inner limiter queued the call after we admitted it: the provider sees it only now.
        # Give the reservation back and take one at this instant, waiting for room if there is
        # none, so the provider never sees more than the quota. It was admitted already, so it
        # checks again ahead of the line.
        layer, key = self.layer, self.key
        backend = layer.backend
        backend.refund(key, self.ticket)
        self.ticket = None
        wait, ticket = await backend.reserve(key, layer.quotas, self.tokens)
        if ticket is None:
            line = layer._line
            future = line.join(key, self.tokens, layer.max_wait)
            try:
                ticket = await future
            except BaseException:
                line.leave(key, future)
                raise
        self.ticket = ticket
        if self.outer is not None:
            await self.outer()
