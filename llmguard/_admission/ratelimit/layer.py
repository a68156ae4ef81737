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
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..._core.call import Call, Handler
from ..._core.check import callable_or_none, number
from ..._core.errors import AdmissionTimeout, RequestTooLarge
from ..._core.events import EventKind
from ..._core.public import public
from ..._core.stream import Stream
from ..._core.tokens import estimate_tokens
from .backend import MemoryBackend, RateLimitBackend
from .headers import DEFAULT_PAUSE, parse_duration, pause_after, rate_limit_headers
from .line import Held, WaitingLine
from .quotas import build_quotas, check_backend, check_choice, used_tokens
from .stats import RateLimitStats

__all__ = ["DEFAULT_PAUSE", "RateLimit", "RateLimitStats", "parse_duration"]

@public
class RateLimit:
    """Layer: admit a call only when every request and token quota has room for it.

    * ``rpm`` / ``rps`` / ``tpm``: at most that many requests (tokens) in any 60 s (1 s) window,
      exactly (a sliding log): the whole quota is usable and never exceeded. ``refill=
      "continuous"`` paces each quota as a bucket refilling at quota/window per second instead,
      as OpenAI and Anthropic enforce theirs; keep the default ``"window"`` for fixed- or
      sliding-window servers, which a bucket would exceed at a window's edge (README).
    * ``tokens(*args, **kwargs) -> int`` estimates a call's tokens (default
      :func:`llmguard.estimate_tokens`: messages plus ``max_tokens``), reserved (``call.tokens``)
      and after the call reconciled to ``usage(result)`` (default ``usage.total_tokens``; a
      stream's final chunk): unused tokens come back, extra ones are charged. A call that never
      reached the provider is refunded. ``charge="reserved"`` keeps reservations as made
      (OpenAI charges ``max_tokens`` at admission and gives nothing back).
    * ``margin`` seconds are added to every window (the gap between admission here and arrival
      at the provider); ``burst`` (in (0, 1]) also caps each quota over a proportionally shorter
      window (``burst=0.1``, ``rpm=600``: at most 60 in any 6 s).
    * Waiting is FIFO per key (``key(*args, **kwargs)``: each key its own quotas). A call that
      then waits in an inner queue (a ConcurrencyLimit below) is counted again when it leaves
      it, when the provider sees it. A 429 pauses the key until its Retry-After (1 s without).
    * ``max_wait`` seconds of waiting raises :class:`AdmissionTimeout`; an estimate larger than
      the token quota raises :class:`RequestTooLarge` at once.
    * ``backend``: where the quota state lives (:class:`RateLimitBackend`; in memory by default).
    """

    __slots__ = (
        "quotas", "backend", "_tokens", "_usage", "_key", "_max_tokens", "_lines",
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
        check_backend(backend)
        #: The quotas enforced together (a call needs room in all of them).
        self.quotas = quotas
        #: Where the quota state lives.
        self.backend: RateLimitBackend = MemoryBackend() if backend is None else backend
        # In memory, admission never suspends (``take``): nobody can overtake a call between its
        # check and joining the line, so with nobody waiting it skips the line (and allocates
        # nothing beyond its entry). A remote reserve suspends (a round trip), so then every
        # call goes through the line, which keeps FIFO within the process.
        self._take = self.backend.take if isinstance(self.backend, MemoryBackend) else None
        token_limits = [q.limit for q in quotas if q.tokens]
        self._max_tokens = min(token_limits) if token_limits else None  # None: no token quota
        self._tokens = estimate_tokens if tokens is None else tokens
        self._usage = usage
        # Read the usage after a call (only with a token quota and charge="actual").
        self._reconcile = charge == "actual" and self._max_tokens is not None
        # A bucket settles every reservation (it tracks those outstanding to bound refunds).
        self._settle = quotas[0].continuous
        self._key = key
        self._line = WaitingLine(self.backend, quotas, max_wait, self._describe)
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
                raise call.rejected("rate_limit", self._too_large(tokens))
        take = self._take
        ticket = None
        if take is not None and key not in self._lines:  # nobody waiting: no coroutine, no line
            ticket = take(key, self.quotas, tokens)
        if ticket is None:  # wait in line (a future, written out here: no frame per waiter)
            line = self._line
            loop = asyncio.get_running_loop()
            started = loop.time()
            future = line.join(key, tokens)
            try:
                ticket = await future
            except AdmissionTimeout as exc:
                raise call.rejected("rate_limit", exc) from None
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
        # What an inner limiter that queues the call calls back (``Held.recount``). An object,
        # not a closure: a closure's cells would be made on every call, 7 of them in this frame.
        held = Held(self._line, call, key, ticket, tokens, call.on_wait)
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
        ref = weakref.ref(stream)  # no cycle through the stream: a dropped one settles at once
        stream.defer(lambda _error: self._finish(call, key, ticket, tokens,
                                                 getattr(ref(), "usage_chunk", None)))

    @property
    def max_wait(self) -> float | None:
        """Seconds a call may wait before AdmissionTimeout (None: no bound); settable."""
        return self._line.max_wait

    @max_wait.setter
    def max_wait(self, seconds: float | None) -> None:
        self._line.max_wait = number("max_wait", seconds, optional=True, unit=" of seconds")

    def _too_large(self, tokens: int) -> RequestTooLarge:
        self._rejected += 1
        return RequestTooLarge(
            f"the call needs an estimated {tokens} tokens but at most {self._max_tokens} are "
            f"ever available ({self._describe()}); shorten the prompt or max_tokens, or raise "
            "the token quota"
        )

    def _finish(self, call: Call, key: Hashable, ticket: Any, tokens: int, result: Any) -> None:
        """Settle a reservation: reconciled to what ``result`` (a stream's last chunk) used."""
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
        pause = pause_after(exc)
        if pause is not None:  # a 429: nothing more for this key until its Retry-After
            self._rate_limited += 1
            self.backend.pause(key, self.quotas, pause)
            call.emit(EventKind.RATE_LIMIT_PAUSED, "rate_limit", delay=pause, error=exc)

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

    def observe_response(self, call: Call) -> None:
        """:class:`~llmguard.HeaderObserver`: learn from the attempt's response headers."""
        if call.response_headers is not None:
            self.observe_headers(call.response_headers,
                                 partition=None if self._key is None else call.partition)

    def statistics(self, key: Hashable = None) -> RateLimitStats:
        """Counters for the whole layer; headroom and pause for ``key`` (default None)."""
        requests, tokens, paused = self.backend.headroom(key, self.quotas)
        return RateLimitStats(
            requests, tokens, self._reserved, self._in_flight, self._line.waiting, self._admitted,
            self._rejected + self._line.timed_out, self._line.timed_out, self._refunds,
            self._rate_limited, paused,
        )

    def __repr__(self) -> str:
        return (f"<RateLimit {self._describe()} in_flight={self._in_flight} waiting="
                f"{self._line.waiting} reserved_tokens={self._reserved} backend={self.backend!r}>")

