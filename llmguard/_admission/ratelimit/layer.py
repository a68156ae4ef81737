"""Request and token quotas (RPM, RPS, TPM) with reservation, reconciliation, refunds and pauses.

State lives behind :class:`RateLimitBackend` (memory by default, Redis to share quotas across
processes); the layer keeps only the local line of waiters (``line``, in a fair order).
Why not aiolimiter: its heap by amount lets 50-token calls overtake a 6,000-token one forever,
it cannot refund or charge, nor pause for Retry-After, and its leaky bucket exceeds the quota in
some 60 s window (``log``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

from ..._core.attempt import with_hook, without_hook
from ..._core.call import Call, loop_of
from ..._core.check import callable_or_none, number, token_count
from ..._core.errors import AdmissionTimeout
from ..._core.layer import Handler
from ..._core.public import public
from ..._core.stream import Stream
from .backend import RateLimitBackend
from .feedback import ServerFeedback
from .headers import DEFAULT_PAUSE, HELD, learned, parse_duration
from .latency import Margin
from .held import Held, defer
from .line import WaitingLine
from .quotas import build_quotas, check_backend, check_choice, used_tokens
from .split_backend import check_fits, setup, split_used, too_large
from .stats import RateLimitStats
from .window import Entry

__all__ = ["DEFAULT_PAUSE", "RateLimit", "RateLimitStats", "parse_duration"]


@public
class RateLimit(ServerFeedback):
    """Layer: admit a call only when every request and token quota has room for it.

    * ``rpm`` / ``rps`` / ``tpm``: the quotas per 60 s (1 s). By default (``refill="auto"``)
      each is paced like the server's own limiter: as a sliding log until the server's shape is
      known (never over any fixed window, sliding window or token bucket), then as the shape
      its headers and 429s show (a bucket refilling at quota/window per second, a fixed window
      with its boundary), at the limit it really admits (a 429 at the 60th request of an
      ``rpm=60`` window: 59). ``statistics().shape`` says what was learned and why.
      ``refill="window"`` keeps the sliding log, ``"continuous"`` a bucket from the start (README).
    * ``tokens(*args, **kwargs) -> int`` estimates a call's tokens (default
      :func:`llmguard.estimate_tokens`: messages plus ``max_tokens``), reserved and reconciled
      to ``usage(result)`` (default ``usage.total_tokens``; a stream's final chunk). A call that
      never reached the provider is refunded. ``charge="reserved"`` keeps reservations as made
      (OpenAI charges ``max_tokens`` at admission and gives nothing back).
    * ``margin`` seconds are added to every window (the time a request takes to reach the
      provider; default: measured, :mod:`.latency`, 0.5 s a minute until then); ``burst`` caps
      each quota over a proportionally shorter window (``burst=0.1``, ``rpm=600``: 60 in 6 s).
    * Waiting calls go by ``call.priority`` (higher first), then round-robin across
      ``call.partition`` (the tenant), then first come; no smaller call overtakes the head (a big
      one is not starved). Each ``key(*args, **kwargs)`` has its own quotas and line. A call
      queued below (a ConcurrencyLimit) counts again as it leaves that queue, ahead of the line.
      A 429 pauses the key until its Retry-After (1 s without) or a fixed window's next boundary.
    * ``input_tpm`` / ``output_tpm``: Anthropic's ITPM/OTPM apart (``split``). ``max_wait``
      seconds of waiting raises :class:`AdmissionTimeout`; an estimate larger than a token
      quota raises :class:`RequestTooLarge` at once.
    * ``backend``: where the quota state lives (:class:`RateLimitBackend`; in memory by default).
      ``assume_spent()`` counts every quota as used up now (a run resumed after a kill).
    """

    #: ``compose`` gives it no header-observing frame: ``__call__`` shows itself the attempt's
    #: response headers (:class:`~llmguard.HeaderObserver`; a coroutine frame less per call).
    observes_inline = True

    __slots__ = ("_margin", "backend", "_tokens", "_usage", "_key", "_max_tokens", "_lines",
                 "_line", "_reserved", "_in_flight", "_admitted", "_rejected", "_refunds",
                 "_rate_limited", "_take", "_reconcile", "_settle", "_learning", "_split")

    def __init__(
        self,
        *,
        rpm: int | None = None,
        rps: int | None = None,
        tpm: int | None = None, input_tpm: int | None = None, output_tpm: int | None = None,
        tokens: Callable[..., int] | None = None,
        usage: Callable[[Any], int | None] | None = None,
        max_wait: float | None = None,
        burst: float | None = None,
        margin: float | None = None,
        charge: str = "actual",
        refill: str = "auto",
        key: Callable[..., Hashable] | None = None,
        backend: RateLimitBackend | None = None,
    ) -> None:
        quotas = build_quotas(rpm, rps, tpm, burst, margin, refill, input_tpm, output_tpm)
        check_choice("charge", charge)
        number("max_wait", max_wait, optional=True, unit=" of seconds",
               hint="; pass None to wait as long as it takes")
        for name, fn in (("tokens", tokens), ("usage", usage), ("key", key)):
            callable_or_none(name, fn)
        check_backend(backend)
        self._margin = Margin(quotas, margin)
        #: Where the quota state lives (``_take``: its synchronous admission, ``setup``).
        self.backend: RateLimitBackend
        self.backend, self._take, self._tokens, self._split = setup(quotas, backend, tokens)
        token_limits = [q.limit for q in quotas if q.tokens and not q.part]  # parts: check_fits
        self._max_tokens = min(token_limits) if token_limits else sum(q.limit for q in quotas if q.part) or None
        self._usage = usage
        # Read the usage after a call (only with a token quota and charge="actual").
        self._reconcile = charge == "actual" and self._max_tokens is not None
        # A bucket settles every reservation (it tracks those outstanding to bound refunds);
        # a backend with ``observe`` reads headers against their request and learns shapes.
        self._settle = any(q.continuous or q.learn for q in quotas)
        self._learning = callable(getattr(self.backend, "observe", None))
        self._key = key
        self._line = WaitingLine(self.backend, quotas, max_wait, self._describe, self._take)
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
            if type(tokens) is not int or tokens < 0:  # checked only when not a count already
                tokens = token_count(tokens, "RateLimit(tokens=...)")
            if tokens > self._max_tokens or (self._split and check_fits(tokens, self.quotas)):
                self._rejected += 1
                raise call.rejected("rate_limit", too_large(tokens, self._max_tokens, self.quotas))
        take = self._take
        ticket = deferred = None
        if take is not None and key not in self._lines:  # nobody waiting: no coroutine, no line
            if self._line.waiting_below and getattr(call_next, "takes_deferred", False) and defer(
                    self._line, key, tokens):
                deferred = True  # ours wait in the queue below: so will it (``held``)
            else:
                margin = self._margin  # ``self.quotas``, without the property unless measured
                ticket = take(key, self.quotas if margin.measured else margin.quotas, tokens)
        if ticket is None and deferred is None:  # wait in line (a future: no frame per waiter)
            line, loop = self._line, call.loop or loop_of(call)
            started = loop.time()
            future = line.join(key, tokens, call.priority or 0, call.partition)
            call.queueing()  # an outer rate limit's reservation waits here, not sent
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
            at = loop.time()
        else:  # taken now: an in-memory entry holds the time read for it (one clock read a call)
            at = 0.0 if deferred else ticket.time if type(ticket) is Entry else loop_of(call).time()
        current = call.current
        if self._max_tokens is not None:
            current.tokens = tokens  # (``call.tokens``, without the property)
        self._admitted += 1
        self._in_flight += 1
        self._reserved += tokens
        # What an inner limiter that queues the call calls back: an object, not a closure
        # (whose cells, 7 in this frame, would be made on every call).
        held = Held(self._line, call, key, ticket, tokens, at)
        hooks = current._on_wait  # ``add_on_wait``: awaits ``held()``, its ``recount``
        current._on_wait = held if hooks is None else with_hook(hooks, held)
        reset = HELD.set(held)  # the provider's headers are read against this reservation
        current.response_headers = None  # this attempt's only (``observes_inline``)
        try:
            result = await call_next(call)
        except BaseException as exc:  # the headers count the refusal, before it is settled
            if current.response_headers is not None:  # (``call.response_headers``)
                self.observe_response(call)
            held.failed()
            self._failed(call, exc, key, held.ticket, tokens)
            raise
        else:  # read once, against the reservation (``HELD``): before the answer is settled;
            # input and output apart, after (the server's remaining counts its unused output)
            stream = isinstance(result, Stream)  # (its headers as of its start: ``started``)
            late = self._split and (self._reconcile or self._settle) and not stream
            if current.response_headers is not None and not late:
                (self.observe_started if stream else self.observe_response)(call)
            if stream:  # usage comes (if at all) in the final chunk
                self._defer(result, call, key, held.ticket, tokens)
            elif self._reconcile or self._settle:
                self._finish(call, key, held.ticket, tokens, result)
                if late and current.response_headers is not None:
                    self.observe_response(call)
            else:  # nothing to reconcile: the reservation stands as made
                self._in_flight, self._reserved = self._in_flight - 1, self._reserved - tokens
        finally:
            hooks = current._on_wait  # ``discard_on_wait``
            current._on_wait = None if hooks is held else without_hook(hooks, held)
            HELD.reset(reset)
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

    def _finish(self, call: Call, key: Hashable, ticket: Any, tokens: int, result: Any) -> None:
        """Settle a reservation: reconciled to what ``result`` (a stream's last chunk) used."""
        self._in_flight, self._reserved = self._in_flight - 1, self._reserved - tokens
        if ticket is None:  # given back when an inner limiter queued it, not taken again
            return
        actual = tokens
        if self._reconcile and result is not None:
            actual = (split_used if self._split else used_tokens)(call, result, tokens, self._usage)
        if actual != tokens or self._settle:
            self.backend.reconcile(key, ticket, actual)
            if self._lines:  # room may have opened: let the head of the line look again
                self._line.wake(key)

    def _describe(self) -> str:
        return ", ".join(q.describe() for q in self.quotas)

    def statistics(self, key: Hashable = None) -> RateLimitStats:
        """Counters for the whole layer; headroom and pause for ``key`` (default None)."""
        requests, tokens, paused = self.backend.headroom(key, self.quotas)
        return RateLimitStats(
            requests, tokens, self._reserved, self._in_flight, self._line.waiting, self._admitted,
            self._rejected, self._line.timed_out, self._refunds, self._rate_limited, paused,
            *learned(self.backend, self.quotas, key), margin=self._margin.seconds)

    def __repr__(self) -> str:
        shape = learned(self.backend, self.quotas, None)[0]
        return (f"<RateLimit {self._describe()} in_flight={self._in_flight} waiting="
                f"{self._line.waiting} reserved_tokens={self._reserved} margin={self._margin!r} "
                f"backend={self.backend!r}" + (f" shape={shape}" if shape else "") + ">")

