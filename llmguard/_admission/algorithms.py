"""Limit algorithms: ``on_sample(rtt, inflight, dropped) -> new_limit``, pure of their inputs.

Netflix concurrency-limits' ``Limit.onSample``: each algorithm is a plain object holding only its
own state, so it is tested directly, without a loop or a limiter. :class:`AdaptiveConcurrency`
feeds it samples and resizes its limiter from the answer. ``Gradient`` (the default) lives in
``gradient.py``, the base class in ``limit_base.py``; both are importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .._core.check import number
from .._core.public import public
from .gradient import Gradient
from .limit_base import EWMA, LimitAlgorithm, check_fraction, check_tolerance

__all__ = ["AIMD", "Gradient", "Gradient2", "LimitAlgorithm", "Vegas"]


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
        self.backoff = check_fraction("backoff", backoff, high_open=True)

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
        self.tolerance = check_tolerance(tolerance)
        self.smoothing = check_fraction("smoothing", smoothing)
        self.backoff = check_fraction("backoff", backoff, high_open=True)
        if not callable(queue_size):
            raise TypeError(f"queue_size must be a callable limit -> extra permits, e.g. math.sqrt, "
                            f"got {queue_size!r}")
        self.queue_size = queue_size
        self._long = EWMA(number("long_window", long_window, integer=True))
        self._short = EWMA(10)
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
