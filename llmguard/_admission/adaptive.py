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
from .cap import Cap
from .algorithms import AIMD, Gradient, Gradient2, LimitAlgorithm, Vegas
from .samples import TokenModel, Window
from .._core.public import public
from .._core.stats import LayerStats

__all__ = ["AdaptiveConcurrency", "AdaptiveStats"]

log = logging.getLogger("llmguard.adaptive")

#: Failures that mean "too much concurrency": the provider pushed back or could not keep up.
DROP_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.TIMEOUT})



ALGORITHMS: dict[str, type[LimitAlgorithm]] = {
    "aimd": AIMD,
    "gradient": Gradient,
    "gradient2": Gradient2,
    "vegas": Vegas,
}


@public
@dataclass(frozen=True, slots=True)
class AdaptiveStats(LayerStats):
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
    on 429s at most once per rtt. Refusals beyond the most calls that lately succeeded together
    teach the provider's cap (``cap.py``): the limit then holds just below it and probes past it
    ever more rarely. When results report output tokens, latency is normalised for
    answer length (a running fit of latency on tokens), so long answers do not look like
    congestion. Place it innermost so it measures the provider, not local queueing.
    ``priority``, ``key``, ``max_queue`` and ``max_wait`` work as in :class:`ConcurrencyLimit`.
    """

    __slots__ = ("algorithm", "_samples", "_drops", "_window", "_tokens", "_backoff_at",
                 "_round_trip", "_cap", "_sent", "_dropped_at")
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
        self._backoff_at = -math.inf  # loop time of the last backoff on 429s
        self._dropped_at = -math.inf  # loop time of the last window counted as dropped
        self._round_trip = 0.0  # the last window's rtt
        self._cap = Cap()  # the provider's concurrency cap, if refusals show one
        self._sent = 0  # calls past admission and not yet released

    def _sample(self, now: float, rtt: float, inflight: int, dropped: bool,
                overload: bool = False) -> None:
        self._samples += 1
        self._drops += dropped
        cap = self._cap
        if not dropped:
            cap.succeeded(inflight)
        elif now - self._backoff_at < self._round_trip and cap.ceiling is not None:
            return  # refused within a round trip of finding the cap: started before that
        else:
            # An instant 429 beyond a fixed cap frees its permit for the next waiter at once:
            # act on the evidence now, not after a window of them (``cap.py``).
            below = cap.refused(inflight, self.limiter.limit)
            if below is not None:
                self._at_cap(now, below)
                return
        window = self._window
        window.add(rtt, inflight, dropped, overload)
        # One update per round trip (Netflix's WindowedLimit): per-call updates react to their
        # own effect before it could be measured (feedback lags one RTT) and oscillate.
        if window.count < self.limiter.limit:
            return
        share = window.drops / window.count
        rtt, inflight, dropped, throttled, error = window.flush()
        cap.round_trip()
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
        if dropped:
            self._dropped_at = now
        cap.crowded(share, self.limiter.limit)
        algorithm = self.algorithm
        before = algorithm.limit
        new = algorithm.on_window(rtt, inflight, dropped, error)
        if new > before and now - self._dropped_at < self._round_trip:
            # Within a round trip of a backoff the window's successes are calls sent before
            # it: they may hold the limit, not raise it (a storm of 503s took it 8 -> 13 and
            # back in one instant, 40 more 503s).
            new = algorithm.limit = before
        self._resize(new, rtt, inflight, dropped)

    def _at_cap(self, now: float, inflight: int) -> None:
        """A refusal showed the provider's cap: back off, not below the cap (it was just shown
        to work), and forget the window (its calls started under the old limit)."""
        self._backoff_at = now
        self._window = Window()
        ceiling = self._cap.found(inflight)
        algorithm = self.algorithm
        algorithm.on_window(0.0, inflight, True, 0.0)
        algorithm.limit = min(max(algorithm.limit, ceiling), algorithm.max_limit)
        self._resize(algorithm.limit, 0.0, inflight, True)

    def _resize(self, new: float, rtt: float, inflight: int, dropped: bool) -> None:
        held = self._cap.clamp(new)
        if held < new:
            self.algorithm.limit = min(self.algorithm.limit, held)  # no wind-up above the cap
        new = max(math.floor(held), 1)
        limiter = self.limiter
        if new != limiter.limit:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("concurrency limit %d -> %d (rtt=%.3fs, inflight=%d, dropped=%s)",
                          limiter.limit, new, rtt, inflight, dropped)
            limiter.limit = new

    def _release(self, _error: object = None) -> None:
        self._sent -= 1
        self.limiter.release()

    async def __call__(self, call: Any, call_next: Any, /) -> Any:
        await self._acquire(call)
        # The calls sent before this one and still out, itself included. Not the limiter's
        # count: a limit raised by 48 grants 48 waiters at once and each would read the count
        # after all of them (every one "started at 96"), while the provider saw them arrive
        # one by one, at 49 .. 96.
        self._sent += 1
        inflight = self._sent
        self._cap.started(inflight)
        loop_time = asyncio.get_running_loop().time
        start = loop_time()
        try:
            result = await call_next(call)
        except Exception as exc:
            # Learn from a drop before the permit goes on: a refusal that lowers the limit
            # then keeps it, where the next waiter used to take it and be refused in turn.
            try:
                if not isinstance(exc, AdmissionError):
                    failure = classify(exc)
                    if failure.kind in DROP_KINDS:
                        now = loop_time()
                        self._sample(now, now - start, inflight, True,
                                     failure.kind is not FailureKind.RATE_LIMITED)
            finally:
                self._release()
            raise
        except BaseException:  # cancelled: give the permit back, learn nothing
            self._release()
            raise
        now = loop_time()
        rtt = now - start
        if isinstance(result, Stream):  # rtt is the time to the first chunk
            result.defer(self._release)
        else:
            self._release()
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
