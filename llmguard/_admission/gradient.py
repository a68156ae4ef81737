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

    ``gradient = clamp(tolerance * rtt_min / rtt, 0.25, 2)``. A sample measures the calls that
    were in flight when they started (``inflight``, admitted up to a round trip ago), so unless
    they filled the limit's permits exactly, ``inflight * gradient`` (else ``limit * gradient``)
    estimates ``tolerance`` x the provider's capacity whatever the lag: a limit above it goes
    there at once, one below moves there smoothed. A drop shrinks the limit by ``backoff``.
    Unlike Gradient2's moving baseline, ``rtt_min`` does not drift up with a standing queue, so
    the limit settles at ``tolerance`` times the capacity, latency within ``tolerance`` of
    unloaded.

    While latency stays at its floor (within a quarter of the tolerance) the limit grows by
    ``growth`` per sample (TCP's slow start: the capacity may be 4 or 400, and ``sqrt(limit)``
    per round trip took 40 s to find 256); the first sample above the floor ends that, and it
    starts again when three samples in a row stay at the floor while ``growth`` x more calls
    are in flight (the capacity rose). Otherwise, at the floor, it adds ``min(sqrt(limit),
    limit / 4)`` smoothed. Every ``probe_every`` samples (and 5 samples after slow start first
    ends, whose small windows are noisy) it re-measures ``rtt_min`` as Envoy does, so a provider
    that became slower is not mistaken for congestion forever: it halves the limit, skips
    samples whose calls started under the old load (``inflight`` above the halved limit), takes
    the lower of the next two, restores the limit and skips the samples admitted meanwhile.
    """

    __slots__ = ("_after_probe", "_base", "_fast", "_measured", "_next_probe", "_probe", "_samples",
                 "_saved", "_settled", "_skips", "_streak", "backoff", "growth", "probe_every",
                 "rtt_min", "smoothing", "tolerance")

    def __init__(
        self,
        initial: float = 4,
        *,
        tolerance: float = 1.1,
        smoothing: float = 0.5,
        backoff: float = 0.9,
        growth: float = 1.4,
        probe_every: int = 100,
        **bounds: float,
    ) -> None:
        super().__init__(initial, **bounds)
        self.tolerance = check_tolerance(tolerance)
        self.smoothing = check_fraction("smoothing", smoothing)
        self.backoff = check_fraction("backoff", backoff, high_open=True)
        self.growth = float(number("growth", growth, low=1, low_open=False,
                                   hint="; 1.4 grows the limit by 40% per round trip"))
        self.probe_every = number("probe_every", probe_every, integer=True)
        #: The provider's unloaded latency, as last measured.
        self.rtt_min = math.inf
        self._samples = 0
        self._probe = 0  # samples the current probe may still skip, or 0
        self._saved = self.limit
        self._skips = 0  # samples after a probe that may still be skipped
        self._next_probe = self.probe_every  # the sample count at which the next probe starts
        self._settled = False  # slow start has ended once
        self._measured: float | None = None  # the first rtt measured by the current probe
        self._after_probe = 0.0  # the probe's limit until a sample admitted after it arrives
        self._fast = True  # growing by ``growth`` per sample (slow start)
        self._streak = 0  # samples in a row in use at the latency floor
        self._base = 0  # calls in flight at the first of them

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        limit = self.limit
        if dropped:
            self._probe = self._streak = 0
            self._measured = None
            self._fast = False
            return self._clamp(limit * self.backoff)
        if rtt <= 0:
            return limit
        self._samples += 1
        if self._probe:
            self._probe -= 1
            if inflight > limit and self._probe > 1:  # admitted before the limit was halved
                return limit
            if self._probe and self._measured is None:  # the first window under the probe
                self._measured = rtt  # may still hold calls of the old load: measure one more
                return limit
            self._probe = self._streak = 0
            self.rtt_min = rtt if self._measured is None else min(rtt, self._measured)
            self._measured = None
            if limit < self._saved:  # calls admitted under the halved limit show no load
                self._after_probe, self._skips = limit, 2
            return self._clamp(self._saved)
        if self._skips and inflight <= self._after_probe:
            self._skips -= 1
            return limit
        self._skips = 0
        self.rtt_min = min(self.rtt_min, rtt)
        if self._samples >= self._next_probe:
            self._next_probe = self._samples + self.probe_every
            # At a low limit the load is already light: measure as is (this also rescues a limit
            # that collapsed because the provider itself became slower).
            self._saved = limit
            if limit > 2 * self.min_limit:
                self._probe = 5
                return self._clamp(limit / 2)
            self._probe = 1
            return limit
        if inflight * 2 < limit:  # app-limited: no information about capacity
            return limit
        gradient = max(0.25, min(2.0, self.tolerance * self.rtt_min / rtt))
        at_floor = rtt <= self.rtt_min * (1 + (self.tolerance - 1) / 4)  # no queue to speak of
        if not at_floor:
            self._streak = 0
        elif not self._streak:
            self._streak, self._base = 1, inflight
        else:  # in a row at the floor, with growth x more in flight than the first: capacity rose
            self._streak += 1
            self._fast = self._fast or (self._streak >= 3 and inflight >= self._base * self.growth)
        if self._fast and not at_floor and not self._settled:
            # The floor so far came from the small, noisy windows of slow start (one low outlier
            # would make every later window look queued): re-measure it soon.
            self._settled = True
            self._next_probe = min(self._next_probe, self._samples + 5)
        self._fast = self._fast and at_floor
        # The sample measured the calls in flight when it started (admitted under an earlier
        # limit, up to a round trip ago), not the current limit: unless they filled the limit's
        # permits exactly, scale what was measured.
        load = limit if inflight == math.floor(limit) else inflight
        if self._fast:
            return self._clamp(max(load * self.growth, limit + 1))
        if not at_floor:
            # ``load * gradient`` estimates tolerance x capacity whatever the lag, so a limit
            # above it goes there at once (a queue is building); one below moves there smoothed.
            target = load * gradient
            if target < limit:
                return self._clamp(target)
            return self._clamp(limit + (target - limit) * self.smoothing)
        # Headroom only while latency is at its floor: it climbs towards capacity, and the
        # fixed point under load stays at limit = tolerance * capacity (latency x tolerance).
        target = load * gradient + min(math.sqrt(limit), limit / 4)
        return self._clamp(limit * (1 - self.smoothing) + target * self.smoothing)
