"""Adaptive concurrency: find a provider's capacity from latency and drops, without configuration.

The limit algorithms are plain objects with one method, ``on_sample(rtt, inflight, dropped) ->
new_limit`` (Netflix concurrency-limits' ``Limit.onSample``): pure functions of their inputs and
their own state, tested directly. The layer holds a :class:`~llmguard._concurrency.
ConcurrencyLimiter` (fair, resizable, cancellation-safe) and resizes it from the samples.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ._check import number
from ._classify import FailureKind, classify
from ._concurrency import ConcurrencyLimit, ConcurrencyLimiter
from ._errors import AdmissionError
from ._stream import Stream
from ._tokens import extract_usage

__all__ = [
    "AIMD",
    "AdaptiveConcurrency",
    "AdaptiveStats",
    "Gradient",
    "Gradient2",
    "LimitAlgorithm",
    "Vegas",
]

log = logging.getLogger("llmguard.adaptive")

#: Failures that mean "too much concurrency": the provider pushed back or could not keep up.
DROP_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.TIMEOUT})


def _fraction(name: str, value: Any, *, high_open: bool = False) -> float:
    what = f"a fraction in (0, 1{')' if high_open else ']'}"
    return float(number(name, value, high=1, high_open=high_open, what=what))


def _tolerance(value: Any) -> float:
    return float(number("tolerance", value, low=1, low_open=False,
                        hint="; 1.1 allows 10% queueing"))


class LimitAlgorithm:
    """Base of the limit algorithms: ``limit`` is a float clamped to ``[min_limit, max_limit]``."""

    __slots__ = ("limit", "min_limit", "max_limit")

    def __init__(self, initial: float = 4, *, min_limit: float = 1, max_limit: float = 256) -> None:
        number("initial", initial)
        # The layer floors the limit into permits, so below 1 it would ask for 0 permits.
        self.min_limit = number("min_limit", min_limit, low=1, low_open=False)
        self.max_limit = number("max_limit", max_limit, low=1, low_open=False)
        if max_limit < min_limit:
            raise ValueError(f"need min_limit <= max_limit, got {min_limit} > {max_limit}")
        #: The current (fractional) limit; the layer rounds it to whole permits.
        self.limit = float(min(max(initial, min_limit), max_limit))

    def _clamp(self, value: float) -> float:
        self.limit = min(max(value, self.min_limit), self.max_limit)
        return self.limit

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        """Take one sample (round-trip seconds, calls in flight when it started, dropped?)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit:.2f})"


class AIMD(LimitAlgorithm):
    """Additive increase, multiplicative decrease on drops (TCP Reno; Netflix ``AIMDLimit``).

    Grows by one permit per sample while the limit is in use, and shrinks by ``backoff`` on a
    drop. Simple and robust, but it only learns from drops, so it runs the provider into its
    429s and its limit saw-tooths below the overload point.
    """

    __slots__ = ("backoff",)

    def __init__(self, initial: float = 4, *, backoff: float = 0.9, **bounds: float) -> None:
        super().__init__(initial, **bounds)
        self.backoff = _fraction("backoff", backoff, high_open=True)

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        if dropped:
            return self._clamp(self.limit * self.backoff)
        if inflight * 2 >= self.limit:  # app-limited below half: no evidence for more
            return self._clamp(self.limit + 1.0)
        return self.limit


class Vegas(LimitAlgorithm):
    """Delay-based (TCP Vegas; Netflix ``VegasLimit``): estimate the queue from ``rtt / rtt_min``.

    ``queue = limit * (1 - rtt_min / rtt)``; grow while the queue is below ``alpha`` (3 log10
    limit), shrink above ``beta`` (6 log10 limit) or on a drop. ``rtt_min`` is re-probed every
    ``probe_every`` samples so a provider that became slower is not mistaken for congestion.
    """

    __slots__ = ("rtt_min", "_samples", "probe_every")

    def __init__(self, initial: float = 4, *, probe_every: int = 1000, **bounds: float) -> None:
        super().__init__(initial, **bounds)
        self.rtt_min = math.inf
        self._samples = 0
        self.probe_every = number("probe_every", probe_every, integer=True)

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        log_limit = max(1.0, math.log10(limit))
        if dropped:
            return self._clamp(limit - log_limit)
        self._samples += 1
        if self._samples % self.probe_every == 0:
            self.rtt_min = rtt  # probe: forget the old floor
        self.rtt_min = min(self.rtt_min, rtt)
        if inflight * 2 < limit:
            return limit
        queue = limit * (1 - self.rtt_min / rtt) if rtt > 0 else 0.0
        if queue < 3 * log_limit:
            return self._clamp(limit + log_limit)
        if queue > 6 * log_limit:
            return self._clamp(limit - log_limit)
        return limit


class Gradient2(LimitAlgorithm):
    """Latency gradient (Netflix ``Gradient2Limit``, Envoy's adaptive concurrency filter).

    Compares a short-term RTT average with a long-term one: ``gradient = clamp(tolerance *
    long / short, 0.5, 1)`` and ``new = limit * gradient + queue_size``, smoothed. Latency rising
    above the long-term baseline shrinks the limit before the provider starts refusing; a drop
    shrinks it by ``backoff`` at once (LLM providers signal overload with 429s/503s, which
    Netflix's version leaves to the caller).
    """

    __slots__ = ("tolerance", "smoothing", "backoff", "queue_size", "_long", "_short", "_n")

    def __init__(
        self,
        initial: float = 4,
        *,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        backoff: float = 0.9,
        queue_size: Callable[[float], float] = math.sqrt,
        long_window: int = 100,
        **bounds: float,
    ) -> None:
        super().__init__(initial, **bounds)
        self.tolerance = _tolerance(tolerance)
        self.smoothing = _fraction("smoothing", smoothing)
        self.backoff = _fraction("backoff", backoff, high_open=True)
        if not callable(queue_size):
            raise TypeError(f"queue_size must be a callable limit -> extra permits, e.g. math.sqrt, "
                            f"got {queue_size!r}")
        self.queue_size = queue_size
        self._long = _EWMA(number("long_window", long_window, integer=True))
        self._short = _EWMA(10)
        self._n = 0

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        if dropped:
            return self._clamp(limit * self.backoff)
        short = self._short.add(rtt)
        long = self._long.add(rtt)
        if long / short > 2:  # the provider got much faster: let the baseline catch up
            self._long.value = long = long * 0.95
        if inflight * 2 < limit:  # app-limited: no information about capacity
            return limit
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        target = limit * gradient + self.queue_size(limit)
        return self._clamp(limit * (1 - self.smoothing) + target * self.smoothing)


class Gradient(LimitAlgorithm):
    """Envoy's adaptive concurrency gradient: latency against the provider's unloaded latency.

    ``gradient = clamp(tolerance * rtt_min / rtt, 0.5, 2)``, ``new = limit * gradient +
    headroom`` (``min(sqrt(limit), limit / 4)`` while latency is at its floor, else 0), smoothed; a drop shrinks the limit by ``backoff``. Unlike Gradient2's moving baseline,
    ``rtt_min`` does not drift up with a standing queue, so the limit settles just above the
    provider's capacity, with latency within ``tolerance`` of unloaded. Every ``probe_every``
    samples it re-measures ``rtt_min`` as Envoy does: it halves the limit for two samples (the
    first drains calls admitted at full load, the second measures) and then restores it, so a
    provider that became slower is not mistaken for congestion forever.
    """

    __slots__ = ("tolerance", "smoothing", "backoff", "probe_every", "rtt_min", "_samples",
                 "_probe", "_saved")

    def __init__(
        self,
        initial: float = 4,
        *,
        tolerance: float = 1.1,
        smoothing: float = 0.5,
        backoff: float = 0.9,
        probe_every: int = 100,
        **bounds: float,
    ) -> None:
        super().__init__(initial, **bounds)
        self.tolerance = _tolerance(tolerance)
        self.smoothing = _fraction("smoothing", smoothing)
        self.backoff = _fraction("backoff", backoff, high_open=True)
        self.probe_every = number("probe_every", probe_every, integer=True)
        #: The provider's unloaded latency, as last measured.
        self.rtt_min = math.inf
        self._samples = 0
        self._probe = 0  # samples left in the current probe (2, 1) or 0
        self._saved = self.limit

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        if dropped:
            self._probe = 0
            return self._clamp(limit * self.backoff)
        if rtt <= 0:
            return limit
        self._samples += 1
        if self._probe:
            self._probe -= 1
            if self._probe:  # the first probe sample still saw the old load
                return limit
            self.rtt_min = rtt
            return self._clamp(self._saved)
        self.rtt_min = min(self.rtt_min, rtt)
        if self._samples % self.probe_every == 0:
            # At a low limit the load is already light: measure as is (this also rescues a limit
            # that collapsed because the provider itself became slower).
            self._saved = limit
            if limit > 2 * self.min_limit:
                self._probe = 2
                return self._clamp(limit / 2)
            self._probe = 1
            return limit
        if inflight * 2 < limit:  # app-limited: no information about capacity
            return limit
        gradient = max(0.5, min(2.0, self.tolerance * self.rtt_min / rtt))
        # Headroom only while latency is at its floor: it climbs fast towards capacity, and the
        # fixed point under load stays at limit = tolerance * capacity (latency x tolerance).
        headroom = min(math.sqrt(limit), limit / 4) if gradient >= 1 + (self.tolerance - 1) / 2 else 0.0
        target = limit * gradient + headroom
        return self._clamp(limit * (1 - self.smoothing) + target * self.smoothing)


class _EWMA:
    """Exponentially weighted moving average that is a plain mean for its first ``n`` samples."""

    __slots__ = ("n", "count", "value")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self.count < self.n:
            self.count += 1
            self.value += (sample - self.value) / self.count
        else:
            self.value += (sample - self.value) * 2 / (self.n + 1)
        return self.value


class _TokenModel:
    """Removes the output length from latency, so long answers do not look like congestion.

    Latency grows with output tokens as ``k * (a + b * tokens)``, where ``k >= 1`` is the
    congestion the algorithms must see. A decaying least-squares fit of latency on tokens gives
    ``a / b`` (the ratio does not depend on ``k``, which is uncorrelated with answer length), and
    ``rtt * (a/b + mean_tokens) / (a/b + tokens)`` is the latency the call would have had at the
    mean length: ``k`` times a constant. Dividing by tokens alone (``a = 0``) would make short
    answers look slow whenever the provider has a fixed base latency.
    """

    __slots__ = ("n", "t", "r", "tt", "tr")

    DECAY = 0.999  # ~1000 samples of memory: follows a provider that changes, ignores noise

    def __init__(self) -> None:
        self.n = self.t = self.r = self.tt = self.tr = 0.0

    def normalise(self, rtt: float, tokens: int) -> float | None:
        """The length-normalised rtt, or None while the fit has too few samples to trust."""
        d = self.DECAY
        self.n = self.n * d + 1
        self.t = self.t * d + tokens
        self.r = self.r * d + rtt
        self.tt = self.tt * d + tokens * tokens
        self.tr = self.tr * d + tokens * rtt
        mean_t = self.t / self.n
        var_t = self.tt / self.n - mean_t * mean_t
        if self.n < 20:
            return None  # a raw rtt now would set a floor that normalised ones never reach
        if var_t <= 1e-9 * mean_t * mean_t:
            return rtt  # lengths do not vary: nothing to remove
        slope = (self.tr / self.n - mean_t * self.r / self.n) / var_t
        if slope <= 0:
            return rtt  # latency does not grow with length here
        base = max(0.0, (self.r / self.n - slope * mean_t) / slope)  # a / b, in tokens
        return rtt * (base + mean_t) / (base + tokens)


class _Window:
    """Samples of one round trip: median RTT of successes, peak in-flight, share of drops."""

    __slots__ = ("count", "rtts", "inflight", "drops", "overloads")

    #: A window counts as dropped only when more than this share of its samples are drops. A
    #: steady trickle of errors (a few percent of 429s from a shared quota) says nothing about
    #: concurrency, yet "any drop in the window" fires in nearly every window once the limit
    #: (the window size) exceeds 1 / error rate, pinning the limit there whatever the capacity.
    DROP_SHARE = 0.1

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.count = self.inflight = self.drops = self.overloads = 0
        self.rtts: list[float] = []

    def add(self, rtt: float, inflight: int, dropped: bool, overload: bool = False) -> None:
        self.count += 1
        self.inflight = max(self.inflight, inflight)
        if dropped:
            self.drops += 1
            self.overloads += overload
        else:
            self.rtts.append(rtt)

    def flush(self) -> tuple[float, int, bool, bool]:
        """The window as one sample (median RTT, peak in-flight, dropped, only by 429s), and
        start a new one.

        The median, as Envoy's filter aggregates a window (p50): one 8 s latency spike in a
        window of 30 one-second calls would move the mean by 25% and shrink the limit.
        """
        sample = (statistics.median(self.rtts) if self.rtts else 0.0, self.inflight,
                  self.drops > self.DROP_SHARE * self.count, not self.overloads)
        self._reset()
        return sample


ALGORITHMS: dict[str, type[LimitAlgorithm]] = {
    "aimd": AIMD,
    "gradient": Gradient,
    "gradient2": Gradient2,
    "vegas": Vegas,
}


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


class AdaptiveConcurrency(ConcurrencyLimit):
    """Layer: a concurrency limit that an algorithm resizes from every call's latency and drops.

    ``algorithm`` is ``"gradient"`` (default), ``"gradient2"``, ``"aimd"``, ``"vegas"`` or a
    :class:`LimitAlgorithm` instance. Drops are RATE_LIMITED, OVERLOADED and TIMEOUT failures; a
    cancelled call or one refused by an inner admission layer is no sample at all. The algorithm
    sees one sample per round trip (``limit`` calls): their median latency, and "dropped" when
    more than 10% of them were drops; it backs off on 429s at most once per rtt. When results
    report output tokens, latency is normalised for answer length (a running fit of latency on
    tokens), so long answers do not look like congestion. Place it innermost so it measures the provider, not local queueing.
    ``priority``, ``key``, ``max_queue`` and ``max_wait`` work as in :class:`ConcurrencyLimit`.
    """

    __slots__ = ("algorithm", "_samples", "_drops", "_window", "_tokens", "_backoff_at",
                 "_round_trip")
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
        self._window = _Window()
        self._tokens = _TokenModel()
        self._backoff_at = -math.inf  # loop time of the last backoff on drops
        self._round_trip = 0.0  # the last window's median rtt

    def _sample(self, now: float, rtt: float, inflight: int, dropped: bool,
                overload: bool = False) -> None:
        self._samples += 1
        self._drops += dropped
        window = self._window
        window.add(rtt, inflight, dropped, overload)
        # One update per round trip (Netflix's WindowedLimit): per-call updates react to their
        # own effect before it could be measured (feedback lags one RTT) and oscillate.
        if window.count < self.limiter.limit:
            return
        rtt, inflight, dropped, throttled = window.flush()
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
        new = math.floor(self.algorithm.on_sample(rtt, inflight, dropped))
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
            result.defer(limiter._release_at_end)
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
