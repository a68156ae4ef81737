"""What the server says about a :class:`RateLimit`'s quotas (its headers: remaining, resets,
limits, and the send latency they time; a 429 and its pause; an attempt that failed or never
reached it, settled) and what a run says it sent: the layer's side facing the provider, apart
from admission (``layer``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from ..._core import clock
from ..._core.call import Call
from ..._core.events import EventKind
from .headers import HELD, STARTED, refusal, report, says_nothing, sent, spend, unsaid
from .latency import Margin
from .log import Entry
from .window import Quota

__all__ = ["ServerFeedback"]


class ServerFeedback:
    """The part of :class:`RateLimit` that reads the provider (a mixin over its state:
    ``backend``, ``_margin``, ``_line``, ``_learning``, ``_key``, ``_tokens``, its counters)."""

    __slots__ = ()
    backend: Any
    _margin: Any
    _line: Any
    _learning: bool
    _key: Any
    _tokens: Any
    _max_tokens: int | None
    _settle: bool
    _in_flight: int
    _reserved: int
    _refunds: int
    _rate_limited: int

    @property
    def quotas(self) -> tuple[Quota, ...]:
        """The quotas enforced together (a call needs room in all of them), each window longer
        than the server's by the margin in force (``statistics().margin``)."""
        margin = self._margin
        if margin.measured and margin.refresh(clock.now()):  # a window without a sample
            self._line.quotas = margin.quotas
        return margin.quotas

    @quotas.setter
    def quotas(self, quotas: tuple[Quota, ...]) -> None:
        """Replace the quotas, windows and margins as they are: nothing measured from then on
        (a benchmark compressing time does this)."""
        self._margin = Margin(quotas, max(q.margin for q in quotas))
        self._line.quotas = quotas

    def observe_headers(self, headers: Mapping[str, str], *, partition: Hashable = None) -> None:
        """Tighten the quotas to the provider's ``x-ratelimit-remaining-*``, ``-reset-*``
        (``6m0s``, ``20ms``) and ``-limit-*`` headers, read against the reservation of the call
        being sent (ours admitted after it were not counted there yet), and (``refill="auto"``)
        learn the server's shape. Never loosens. ``partition`` is the ``key`` value."""
        if says_nothing(headers):  # what reading them would do, without the reads (an upstream
            if self._learning:     # that says nothing, on every answer): nothing was said
                unsaid(self.backend, self.quotas, partition)
        else:
            held = HELD.get()  # the send latency: the margin (:mod:`.latency`)
            if held and held.line is self._line:
                margin = self._margin
                if margin.observe(headers, held.at):
                    self._line.quotas = margin.quotas
                if margin.way is not None and type(held.ticket) is Entry:
                    held.ticket.way = margin.way  # its own way there (a probe's bounds)
            report(self.backend, self.quotas, self._learning, headers, partition, self._line)
        self._line.wake(partition)

    def assume_spent(self, key: Hashable = None) -> None:
        """Count every quota of ``key`` as used up now (a run resumed after a killed one)."""
        spend(self.backend, self.quotas, key)

    def assume_sent(self, call: Call, *, at: float | None = None) -> None:
        """Count ``call``, sent without this layer at loop time ``at`` (default now), as admitted
        then (the call a run learned its quotas from; Redis cannot: nothing is counted)."""
        tokens = self._tokens(*call.args, **call.kwargs) if self._max_tokens else 0
        sent(self.backend, self.quotas, self._key and call.partition, tokens, at)

    def observe_response(self, call: Call) -> None:
        """:class:`~llmguard.HeaderObserver`: learn from the attempt's response headers."""
        if call.response_headers is not None:
            self.observe_headers(call.response_headers, partition=self._key and call.partition)

    def observe_started(self, call: Call) -> None:
        """:meth:`observe_response` for a stream's headers: sent as it started, they show the
        server as its request was admitted (``STARTED``: the give-back reads them so)."""
        reset = STARTED.set(True)
        try:
            self.observe_response(call)
        finally:
            STARTED.reset(reset)

    def _failed(self, call: Call, exc: BaseException, key: Hashable, ticket: Any,
                tokens: int) -> None:
        """Settle a reservation after the call failed, and pause the key after a 429 (first:
        the refusal teaches about the ticket before it is settled)."""
        self._in_flight, self._reserved = self._in_flight - 1, self._reserved - tokens
        pause = refusal(self.backend, self.quotas, self._learning, key, exc,
                        ticket if call.sent else None)
        if pause is not None:  # a 429: nothing more for this key until its Retry-After
            self._rate_limited += 1
            call.emit(EventKind.RATE_LIMIT_PAUSED, "rate_limit", delay=pause, error=exc)
            if self._learning:  # it may learn the server admits sooner: Retry need not wait
                call.current.resume_at = clock.now()
        if ticket is not None:
            # Never sent (refused or queued below us, cancelled or timed out before sending):
            # the provider never saw it, so the reservation goes back. Sent: it counted.
            if not call.sent:
                self._refunds += 1
                self.backend.refund(key, ticket)
            elif self._settle:
                self.backend.reconcile(key, ticket, tokens)
            self._line.wake(key)
