"""Adaptive concurrency: find a provider's capacity from latency and drops, without configuration.

The limit algorithms are plain objects with one method, ``on_sample(rtt, inflight, dropped) ->
new_limit`` (Netflix concurrency-limits' ``Limit.onSample``): pure functions of their inputs and
their own state, tested directly. The layer holds a :class:`~llmguard._admission.concurrency.
ConcurrencyLimiter` (fair, resizable, cancellation-safe) and resizes it from the samples, which
it gathers per round trip in a :class:`~llmguard._admission.samples.Window` (``samples.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .._core.check import number
from .._core.classify import FailureKind, classify
from .concurrency import ConcurrencyLimit
from .limiter import ConcurrencyLimiter
from .._core.errors import AdmissionError
from .._core.stream import Stream
from .._core.tokens import extract_usage
from .algorithms import AIMD, Gradient, Gradient2, LimitAlgorithm, Vegas
from .samples import TokenModel, Window
from .._core.public import public

__all__ = ["AdaptiveConcurrency", "AdaptiveStats"]

log = logging.getLogger("llmguard.adaptive")

#: Failures that mean "too much concurrency": the provider pushed back or could not keep up.
DROP_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.TIMEOUT})


#: Round trips held at a cap learned from drops before probing one permit past it; doubled
#: after each probe that finds the cap again, up to MAX_PROBE_EVERY.
FIRST_PROBE_EVERY, MAX_PROBE_EVERY = 4, 256

UNSEEN = 1 << 62


ALGORITHMS: dict[str, type[LimitAlgorithm]] = {
    "aimd": AIMD,
    "gradient": Gradient,
    "gradient2": Gradient2,
    "vegas": Vegas,
}


@public
@dataclass(frozen=True, slots=True)
class AdaptiveStats:
    """A snapshot of an :class:`AdaptiveConcurrency` layer."""

    limit: int
    in_flight: int
    waiting: int
    algorithm: str
    samples: int
    drops: int
    admitted: int
    rejected: int
    timed_out: int


@public
class AdaptiveConcurrency(ConcurrencyLimit):
    """Layer: a concurrency limit that an algorithm resizes from every call's latency and drops.

    ``algorithm`` is ``"gradient"`` (default), ``"gradient2"``, ``"aimd"``, ``"vegas"`` or a
    :class:`LimitAlgorithm` instance. Drops are RATE_LIMITED, OVERLOADED and TIMEOUT failures; a
    cancelled call or one refused by an inner admission layer is no sample at all. The algorithm
    sees one sample per round trip (``limit`` calls): their latency (mean of the fastest 90%),
    in-flight count (median), and "dropped" when more than 10% of them were drops; it backs off
    on 429s at most once per rtt. When results report output tokens, latency is normalised for
    answer length (a running fit of latency on tokens), so long answers do not look like
    congestion. Place it innermost so it measures the provider, not local queueing.
    ``priority``, ``key``, ``max_queue`` and ``max_wait`` work as in :class:`ConcurrencyLimit`.
    """

    __slots__ = ("algorithm", "_samples", "_drops", "_window", "_tokens", "_backoff_at",
                 "_round_trip", "_ok", "_ok_before", "_ceiling", "_probe_every", "_probe_step",
                 "_held", "_edge_calls", "_edge_drops", "_edge_low", "_probing")
    _wait_label = "adaptive_concurrency"

    def __init__(
        self,
        *,
        initial: int = 4,
        min: int = 1,  # noqa: A002 - the documented option name
        max: int = 256,  # noqa: A002
        algorithm: str | LimitAlgorithm = "gradient",
        max_queue: int | None = None,
        max_wait: float | None = None,
        priority: Callable[..., int] | None = None,
        key: Callable[..., Hashable] | None = None,
    ) -> None:
        for name, value in (("initial", initial), ("min", min), ("max", max)):
            number(name, value, integer=True)
        if not min <= initial <= max:
            raise ValueError(f"need min <= initial <= max, got {min} <= {initial} <= {max}")
        if isinstance(algorithm, str):
            if algorithm not in ALGORITHMS:
                raise ValueError(
                    f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)} "
                    "or pass a LimitAlgorithm instance"
                )
            algorithm = ALGORITHMS[algorithm](initial, min_limit=min, max_limit=max)
        elif not isinstance(algorithm, LimitAlgorithm):
            raise TypeError(f"algorithm must be a name or a LimitAlgorithm, got {algorithm!r}")
        super().__init__(
            ConcurrencyLimiter(initial, max_queue=max_queue, max_wait=max_wait),
            priority=priority,
            key=key,
        )
        #: The limit algorithm (its state is the fractional limit).
        self.algorithm = algorithm
        self._samples = self._drops = 0
        self._window = Window()
        self._tokens = TokenModel()
        self._backoff_at = -math.inf  # loop time of the last backoff on drops
        self._round_trip = 0.0  # the last window's rtt
        self._ok = self._ok_before = 0  # most in flight at a success, this window and the last
        self._ceiling: int | None = None  # the provider's cap, learned from drops beyond it
        self._probe_every = FIRST_PROBE_EVERY  # round trips at the cap between probes past it
        self._probe_step = 1
        self._held = 0  # round trips held at the cap since the last probe
        self._edge_calls = self._edge_drops = 0  # started, refused at the edge this window
        self._edge_low = UNSEEN  # the lowest in-flight count refused at the edge
        self._probing = 0  # round trips left in a probe one step past the cap

    def _sample(self, now: float, rtt: float, inflight: int, dropped: bool,
                overload: bool = False) -> None:
        self._samples += 1
        self._drops += dropped
        if not dropped:
            self._ok = max(self._ok, inflight)
        elif now - self._backoff_at < self._round_trip and self._ceiling is not None:
            return  # refused within a round trip of finding the cap: started before that
        elif 2 * max(self._ok, self._ok_before) < self.limiter.limit:
            pass  # hardly any success lately: a storm of 429s, not a cap on concurrency
        elif self._probing:  # a probe past the cap was refused: the cap holds
            self._at_cap(now, min(inflight, self.limiter.limit))
            return
        elif inflight > max(self._ok, self._ok_before):
            # Refused at an in-flight count no success reached lately (the edge). When most
            # calls started at the edge are refused, the provider has a cap just below it (an
            # instant 429 or 503 beyond a fixed concurrency; latency says nothing there): act
            # at once, for each instant 429 frees its permit for the next waiter, and waiting
            # for a window of them made 47% of calls 429s. Two such drops, not one: a steady
            # trickle of 429s from a shared quota also hits the edge now and then.
            self._edge_drops += 1
            self._edge_low = min(self._edge_low, inflight)
            if self._edge_drops >= 2 and 2 * self._edge_drops >= self._edge_calls:
                self._at_cap(now, self._edge_low)
                return
        window = self._window
        window.add(rtt, inflight, dropped, overload)
        # One update per round trip (Netflix's WindowedLimit): per-call updates react to their
        # own effect before it could be measured (feedback lags one RTT) and oscillate.
        if window.count < self.limiter.limit:
            return
        share = window.drops / window.count
        if self._probing:  # round trips past the cap without a drop: the probe passed
            self._probing -= 1
        rtt, inflight, dropped, throttled, error = window.flush()
        if self._ok > self._ok_before:  # the edge moved up: count afresh above it
            self._edge_calls = self._edge_drops = 0
            self._edge_low = UNSEEN
        self._ok_before, self._ok = self._ok, 0
        if rtt > 0:
            self._round_trip = rtt
        # 429s back the limit off at most once per round trip (TCP's fast recovery): a 429
        # storm answers every call at once, so windows of ``limit`` instant 429s close in a
        # blink, and backing off for each took the limit from 30 to 1 within one round trip
        # while a queue drained into the storm; those windows, and the others of the rtt after
        # the backoff (calls admitted under the old limit), are discarded. An overloaded
        # provider's instant 503s still back off per window: each is one call too many.
        if now - self._backoff_at < self._round_trip:
            return
        if dropped and throttled:
            self._backoff_at = now
        if (share >= 0.25 and self._ceiling is not None and self.limiter.limit >= self._ceiling
                and 2 * self._ok_before >= self.limiter.limit):
            # Drops at the cap: it sits lower than the first drop showed (the count in flight
            # when a call starts includes calls the provider has just finished).
            self._ceiling = max(self._ceiling - 1, 1)
            self._probe_every = min(4 * self._probe_every, MAX_PROBE_EVERY)
        self._resize(self.algorithm.on_window(rtt, inflight, dropped, error), rtt, inflight,
                     dropped)

    def _at_cap(self, now: float, inflight: int) -> None:
        """A drop beyond the in-flight counts that succeeded: remember the cap below it, back
        off (not below the cap: it was just shown to work), and probe past it again only
        rarely (every ``_probe_every`` round trips at the cap, twice as rarely after each probe
        that found it unchanged)."""
        self._backoff_at = now
        self._edge_calls = self._edge_drops = 0
        self._edge_low = UNSEEN
        self._window = Window()  # its calls started before: no evidence about the new limit
        if self._probing:  # the probe found the cap where it was: probe less often
            self._probe_every = min(4 * self._probe_every, MAX_PROBE_EVERY)
            self._probing = 0
        # Below the refused call, and at most the most calls lately seen succeeding together
        # (calls granted at once all see the same count, so the refused one's is an upper
        # bound only).
        self._ceiling = cap = max(min(inflight - 1, max(self._ok, self._ok_before)), 1)
        self._probe_step, self._held = 1, 0
        algorithm = self.algorithm
        algorithm.on_window(0.0, inflight, True, 0.0)
        algorithm.limit = min(max(algorithm.limit, cap), algorithm.max_limit)
        self._resize(algorithm.limit, 0.0, inflight, True)

    def _resize(self, new: float, rtt: float, inflight: int, dropped: bool) -> None:
        ceiling = self._ceiling
        if ceiling is not None and new > ceiling:
            self._held += 1  # the algorithm wants more than the cap: probe past it now and then
            if self._held >= self._probe_every:
                self._held = 0
                self._ceiling = ceiling = ceiling + self._probe_step
                self._probe_step *= 2  # each probe that passes probes further
                self._probing = 2  # round trips (the next may end before the probe's calls)
            new = min(new, ceiling)
            self.algorithm.limit = min(self.algorithm.limit, ceiling)  # no wind-up above it
        new = max(math.floor(new), 1)
        limiter = self.limiter
        if new != limiter.limit:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("concurrency limit %d -> %d (rtt=%.3fs, inflight=%d, dropped=%s)",
                          limiter.limit, new, rtt, inflight, dropped)
            limiter.limit = new

    async def __call__(self, call: Any, call_next: Any, /) -> Any:
        limiter = self.limiter
        await self._acquire(call)
        inflight = limiter.in_flight
        if inflight > self._ok and inflight > self._ok_before:
            self._edge_calls += 1  # started at an in-flight count no success reached lately
        loop_time = asyncio.get_running_loop().time
        start = loop_time()
        try:
            result = await call_next(call)
        except Exception as exc:
            limiter.release()
            if not isinstance(exc, AdmissionError):
                failure = classify(exc)
                if failure.kind in DROP_KINDS:
                    now = loop_time()
                    self._sample(now, now - start, inflight, True,
                                 failure.kind is not FailureKind.RATE_LIMITED)
            raise
        except BaseException:  # cancelled: give the permit back, learn nothing
            limiter.release()
            raise
        now = loop_time()
        rtt = now - start
        if isinstance(result, Stream):  # rtt is the time to the first chunk
            result.defer(lambda _error: limiter.release())
        else:
            limiter.release()
            usage = extract_usage(result)
            if usage is not None and usage.output_tokens > 0:
                rtt = self._tokens.normalise(rtt, usage.output_tokens)
                if rtt is None:
                    return result
        self._sample(now, rtt, inflight, False)
        return result

    def statistics(self) -> AdaptiveStats:  # type: ignore[override]
        s = self.limiter.statistics()
        return AdaptiveStats(
            s.limit, s.in_flight, s.waiting, type(self.algorithm).__name__, self._samples,
            self._drops, s.admitted, s.rejected, s.timed_out,
        )

    def __repr__(self) -> str:
        return f"<AdaptiveConcurrency {self.algorithm!r} {self.limiter!r}>"
