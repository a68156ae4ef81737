"""The default limit algorithm: latency against the provider's unloaded latency (Envoy)."""

from __future__ import annotations

import math

from .._core.check import number
from .._core.public import public
from .limit_base import LimitAlgorithm, check_fraction, check_tolerance

__all__ = ["Gradient"]


@public
class Gradient(LimitAlgorithm):
    """Envoy's adaptive concurrency gradient: latency against the provider's unloaded latency.

    ``gradient = clamp(tolerance * rtt_min / rtt, 0.5, 2)``, ``new = limit * gradient +
    headroom``, smoothed; a drop shrinks the limit by ``backoff``. Unlike Gradient2's moving
    baseline, ``rtt_min`` does not drift up with a standing queue, so the limit settles at
    ``tolerance`` times the provider's capacity, with latency within ``tolerance`` of unloaded.

    While latency stays at its floor the limit grows by ``growth`` per sample (TCP's slow
    start: the capacity may be 4 or 400, and adding ``sqrt(limit)`` per round trip took a
    minute to find 256); the first sample above the floor ends that, and three in a row at the
    floor start it again (the capacity rose). Every ``probe_every`` samples it re-measures
    ``rtt_min`` as Envoy does, so a provider that became slower is not mistaken for congestion
    forever: it halves the limit, skips samples whose calls started under the old load
    (``inflight`` above the halved limit), measures one, and restores the limit.
    """

    __slots__ = ("tolerance", "smoothing", "backoff", "growth", "probe_every", "rtt_min",
                 "_samples", "_probe", "_saved", "_fast", "_streak", "_base")

    def __init__(
        self,
        initial: float = 4,
        *,
        tolerance: float = 1.1,
        smoothing: float = 0.5,
        backoff: float = 0.9,
        growth: float = 1.3,
        probe_every: int = 100,
        **bounds: float,
    ) -> None:
        super().__init__(initial, **bounds)
        self.tolerance = check_tolerance(tolerance)
        self.smoothing = check_fraction("smoothing", smoothing)
        self.backoff = check_fraction("backoff", backoff, high_open=True)
        self.growth = float(number("growth", growth, low=1, low_open=False,
                                   hint="; 1.5 grows the limit by half per round trip"))
        self.probe_every = number("probe_every", probe_every, integer=True)
        #: The provider's unloaded latency, as last measured.
        self.rtt_min = math.inf
        self._samples = 0
        self._probe = 0  # samples the current probe may still skip, or 0
        self._saved = self.limit
        self._fast = True  # growing by ``growth`` per sample (slow start)
        self._streak = 0  # samples in a row in use at the latency floor
        self._base = 0  # calls in flight at the first of them

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        if dropped:
            self._probe = self._streak = 0
            self._fast = False
            return self._clamp(limit * self.backoff)
        if rtt <= 0:
            return limit
        self._samples += 1
        if self._probe:
            self._probe -= 1
            if inflight > limit and self._probe:  # calls admitted before the limit was halved
                return limit
            self._probe = 0
            self.rtt_min = rtt
            return self._clamp(self._saved)
        self.rtt_min = min(self.rtt_min, rtt)
        if self._samples % self.probe_every == 0:
            # At a low limit the load is already light: measure as is (this also rescues a limit
            # that collapsed because the provider itself became slower).
            self._saved = limit
            if limit > 2 * self.min_limit:
                self._probe = 4
                return self._clamp(limit / 2)
            self._probe = 1
            return limit
        if inflight * 2 < limit:  # app-limited: no information about capacity
            return limit
        gradient = max(0.25, min(2.0, self.tolerance * self.rtt_min / rtt))
        at_floor = gradient >= 1 + (self.tolerance - 1) / 2
        if not at_floor:
            self._streak = 0
        elif not self._streak:
            self._streak, self._base = 1, inflight
        else:  # in a row at the floor, with growth x more in flight than the first: capacity rose
            self._streak += 1
            self._fast = self._fast or (self._streak >= 3 and inflight >= self._base * self.growth)
        self._fast = self._fast and at_floor
        if self._fast:
            return self._clamp(max(min(inflight, limit) * self.growth, limit + 1))
        if not at_floor:
            # The sample's latency is that of ``inflight`` calls (admitted under an earlier limit,
            # a round trip ago), not of ``limit``: ``inflight * gradient`` estimates tolerance x
            # capacity whatever the lag, so a limit above it goes there at once.
            target = inflight * gradient
            if gradient < 1:
                return self._clamp(target)
            return self._clamp(limit + (target - limit) * self.smoothing)
        # Headroom only while latency is at its floor: it climbs towards capacity, and the
        # fixed point under load stays at limit = tolerance * capacity (latency x tolerance).
        target = min(inflight, limit) * gradient + min(math.sqrt(limit), limit / 4)
        return self._clamp(limit * (1 - self.smoothing) + target * self.smoothing)
