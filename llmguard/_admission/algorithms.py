"""Limit algorithms: ``on_sample(rtt, inflight, dropped) -> new_limit``, pure of their inputs.

Netflix concurrency-limits' ``Limit.onSample``: each algorithm is a plain object holding only its
own state, so it is tested directly, without a loop or a limiter. :class:`AdaptiveConcurrency`
feeds it samples and resizes its limiter from the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._core.check import number
from .._core.public import public

__all__ = ["AIMD", "Gradient", "Gradient2", "LimitAlgorithm", "Vegas"]


def _fraction(name: str, value: Any, *, high_open: bool = False) -> float:
    what = f"a fraction in (0, 1{')' if high_open else ']'}"
    return float(number(name, value, high=1, high_open=high_open, what=what))


def _tolerance(value: Any) -> float:
    return float(number("tolerance", value, low=1, low_open=False,
                        hint="; 1.1 allows 10% queueing"))


@public
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


@public
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


@public
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


@public
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


@public
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
