"""The default limit algorithm: latency against the provider's unloaded latency, with load evidence."""

from __future__ import annotations

import math
import statistics
from collections import deque

from .._core.check import number
from .._core.public import public
from .limit_base import LimitAlgorithm, check_fraction, check_tolerance

__all__ = ["Gradient"]

#: A shrink for latency is confirmed when latency fell at least this elastically with the
#: permits (``log(rtt before / after) >= ELASTIC * log(permits before / after)``).
ELASTIC = 0.25

#: Windows over which latency is regressed on load (``Gradient._relearn``).
RECENT = 8


@public
class Gradient(LimitAlgorithm):
    """Envoy's adaptive concurrency gradient, made robust to latency that varies without load.

    ``gradient = (tolerance * base + margin) / rtt``, where ``base`` is the provider's unloaded
    latency and ``margin`` twice the standard error of the window's latency (its noise: see
    :meth:`on_window`). A sample measures the calls that were in flight when they started
    (``inflight``), so unless they filled the limit exactly, ``inflight * gradient`` (else
    ``limit * gradient``) estimates ``tolerance`` x the provider's capacity: a limit above it
    goes there at once, one below moves there smoothed. A drop shrinks the limit by ``backoff``.

    **The baseline is robust, and a shrink needs load evidence.** Envoy's ``rtt_min`` (the
    lowest latency seen) collapsed the limit to 1 on a provider whose latency merely varies: the
    minimum of noisy windows sits in their low tail, so every later window looked queued, each
    shrink made the windows smaller and noisier, and the limit went 64 -> 1 with no load at all.
    Here ``base`` is the mean of the windows at the floor (not significantly above it), each
    weighted by its precision and the older ones fading, drops at once to a window
    significantly below it (a faster provider), and never rises from a window above the floor
    (a standing queue must not become the new normal, Gradient2's drift). A window counts as
    queued only when its latency is significantly above ``tolerance * base`` (beyond ``margin``,
    two standard errors of the difference). Each shrink for latency is then checked: if the
    first window of calls admitted under the smaller limit is not faster by at least half of
    what queueing would explain, the latency was not load (the provider became slower: a step
    from 1 s to 3 s took the limit 70 -> 1) and the algorithm re-baselines there and restores
    the limit.

    While latency stays at its floor the limit grows by ``growth`` (2) per sample (TCP's slow
    start: the capacity may be 4 or 400), from the limit itself until the capacity was first met
    (callers wait for it), from the measured load after; the first sample above the floor ends
    that, back at the last load seen at the floor, and it starts again when three samples in a
    row stay at the floor while ``growth`` x more calls are in flight (the capacity rose).
    Otherwise, at the floor, it adds ``min(sqrt(limit), limit / 4)`` smoothed.
    """

    __slots__ = ("_base_in", "_ended", "_fast", "_good", "_noise", "_recent", "_streak", "_verify", "_weight", "backoff", "base", "growth",
                 "smoothing", "tolerance")

    #: Weight of a window in the windows' usual noise (a moving average).
    BASE_WEIGHT = 0.2
    #: How much of its weight the baseline keeps per window (older windows fade: ~5 of memory).
    BASE_DECAY = 0.8

    def __init__(
        self,
        initial: float = 4,
        *,
        tolerance: float = 1.1,
        smoothing: float = 0.5,
        backoff: float = 0.9,
        growth: float = 2.0,
        **bounds: float,
    ) -> None:
        super().__init__(initial, **bounds)
        self.tolerance = check_tolerance(tolerance)
        self.smoothing = check_fraction("smoothing", smoothing)
        self.backoff = check_fraction("backoff", backoff, high_open=True)
        self.growth = float(number("growth", growth, low=1, low_open=False,
                                   hint="; 2 doubles the limit per round trip"))
        #: The provider's unloaded latency (seconds), as currently estimated (None: no sample).
        self.base: float | None = None
        self._verify: tuple[float, float, int, int, int] | None = None
        self._good = 0.0  # the last load slow start saw at the latency floor
        self._ended = False  # slow start ended once (the capacity was seen)
        self._fast = True  # growing by ``growth`` per sample (slow start)
        self._streak = 0  # samples in a row in use at the latency floor
        self._base_in = 0  # calls in flight at the first of them
        self._weight = 0.0  # the baseline's precision (1 / its standard error squared)
        self._noise: float | None = None  # the windows' relative standard error, averaged
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT)  # log in flight, log rtt

    def _relearn(self, rtt: float, inflight: int, precision: float) -> None:
        """Load evidence over the last windows: when they spread over a range of in-flight
        counts and their latency did not grow with it (elasticity below ELASTIC: noise, or a
        provider that became slower), latency is not queueing; the baseline is their median."""
        recent = self._recent
        recent.append((math.log(max(inflight, 1)), math.log(rtt)))
        if len(recent) < recent.maxlen:  # type: ignore[operator]
            return
        loads = [x for x, _ in recent]
        if max(loads) - min(loads) < math.log(1.25):  # too little spread to tell
            return
        mean_x = sum(loads) / len(loads)
        mean_y = sum(y for _, y in recent) / len(recent)
        var = sum((x - mean_x) ** 2 for x in loads)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in recent) / var
        if slope < ELASTIC:
            median = math.exp(statistics.median(y for _, y in recent))
            if median > (self.base or 0.0):  # the floor was a low outlier: growth resumes
                self.base, self._weight, self._fast = median, precision, True
            recent.clear()

    def on_sample(self, rtt: float, inflight: int, dropped: bool) -> float:
        return self.on_window(rtt, inflight, dropped, 0.0)

    def on_window(self, rtt: float, inflight: int, dropped: bool, error: float) -> float:
        """One round trip: its latency ``rtt``, in-flight count, dropped or not, and ``error``
        (seconds), the standard error of ``rtt`` (the noise of the window's calls' latencies)."""
        limit = self.limit
        if dropped:
            self._verify = None
            self._streak = 0
            self._fast, self._ended = False, True
            return self._clamp(limit * self.backoff)
        if rtt <= 0:
            return limit
        # Each window's weight in the baseline is its precision (1 / standard error squared):
        # a window of 4 calls says little about the provider's unloaded latency, one of 64 more.
        # Twice the window's standard error, but no more than the usual noise: a window that
        # mixes calls admitted under two limits is spread by load, not by noise.
        noise = error / rtt if self._noise is None else self._noise
        self._noise = noise + (error / rtt - noise) * self.BASE_WEIGHT
        # (A window of one call has no standard error of its own: the usual one stands in.)
        precision = 1 / max(error or noise * rtt, 1e-6 * rtt) ** 2
        if self.base is None:
            self.base, self._weight = rtt, precision
        margin = 2 * min(error, noise * rtt)
        if self._verify is not None and self._verify[3]:
            before, slow, busy, shrunk, wait = self._verify
            if inflight > shrunk or wait:  # calls admitted before the shrink (the median
                if inflight <= shrunk:  # call of a window, so one more): not the evidence yet
                    self._verify = (before, slow, busy, shrunk, wait - 1)
                return limit
            self._verify = None
            # Elasticity of latency to load: about 1 while the calls queue at the provider
            # (latency ~ in flight), about 0 when the provider itself became slower.
            if math.log(slow / rtt) < ELASTIC * math.log(busy / shrunk):
                # Not faster with far fewer calls in flight: re-baseline, restore the limit.
                self.base, self._weight = rtt, precision
                return self._clamp(max(before, limit))
        # Two standard errors of the difference between the window and the baseline.
        margin = math.hypot(margin, 2 / math.sqrt(self._weight))
        base = self.base
        # At the floor: within a quarter of the tolerance, give or take three standard errors
        # (with two, one noisy window in twenty ended slow start on a provider under no load).
        at_floor = rtt <= base * (1 + (self.tolerance - 1) / 4) + 1.5 * margin
        if rtt < base - margin:  # significantly faster: the provider sped up
            self.base, self._weight = rtt, precision
        elif at_floor and (not self._fast or inflight * 2 < limit):
            # The baseline pools the windows at the floor (their precision-weighted mean, the
            # older ones fading), not their minimum: the low tail of noisy windows made every
            # later one look queued. A window above the floor never moves it (a standing
            # queue must not become the new normal, Gradient2's drift), nor does one of slow
            # start while the limit binds: a window closes on its first ``limit`` answers, and
            # while the limit doubles those are the fastest of the newest calls (latency
            # uniform 1-3 s read 1.6 s, and the steady 2 s after looked queued).
            weight = self._weight * self.BASE_DECAY
            self._weight = weight + precision
            self.base = (base * weight + rtt * precision) / self._weight
        if inflight * 2 < limit:  # app-limited: no information about capacity
            return limit
        self._relearn(rtt, inflight, precision)
        base = self.base
        if not at_floor:
            self._streak = 0
        elif not self._streak:
            self._streak, self._base_in = 1, inflight
        else:  # in a row at the floor, with growth x more in flight than the first: capacity rose
            self._streak += 1
            self._fast = self._fast or (self._streak >= 3 and inflight >= self._base_in * self.growth)
        ended = self._fast and not at_floor
        self._ended = self._ended or ended
        self._fast = self._fast and at_floor
        # The sample measured the calls in flight when it started (admitted under an earlier
        # limit, up to a round trip ago), not the current limit: unless they filled the limit's
        # permits exactly, scale what was measured.
        load = limit if inflight == math.floor(limit) else inflight
        if self._fast:
            self._verify = None
            # The window's busier calls reached the load of the last growth: the limit is the
            # bottleneck (callers wait for it), so grow the limit, not the load the window
            # measured (its calls were admitted as the limit rose: growing from that took two
            # round trips per step).
            if not self._ended and inflight >= math.floor(self._good):
                load = max(load, limit)
            self._good = load
            return self._clamp(max(load * self.growth, limit + 1))
        ceiling = base * self.tolerance + margin
        target = load * max(0.5, min(2.0, ceiling / rtt))
        if ended:
            # Slow start ends: back to the last load seen at the floor, below the growth that
            # overshot. The window cannot tell how far it did: it closes on its first ``limit``
            # answers, the calls that queued least (a window at 96 in flight on a capacity of
            # 64 read 1.05 s where they take 1.5), and a round trip overshot queues every call.
            return self._clamp(min(target, max(self._good, limit / self.growth ** 2)))
        if rtt > ceiling:  # significantly queued: shrink at once, then check it was the load
            if target < limit:
                # Shrinks in a row since the last growth: once they add up to far fewer
                # permits, check that latency followed the load down.
                # (The load is the window's, not the limit: a window that closes just after
                # the limit rose measured calls admitted under the old one.)
                before, slow, busy = ((limit, rtt, max(inflight, 1)) if self._verify is None
                                      else self._verify[:3])
                shrunk = max(math.floor(target), 1)
                armed = shrunk if shrunk <= 0.8 * busy else 0
                self._verify = (before, slow, busy, armed, 1)
                return self._clamp(target)
            return limit
        if at_floor:
            # Headroom only while latency is at its floor: it climbs towards capacity, and the
            # fixed point under load stays at limit = tolerance * capacity.
            target += min(math.sqrt(limit), limit / 4)
        if target < limit:
            return limit  # within the tolerance: hold
        self._verify = None  # growing again: the shrinks so far were right
        return self._clamp(limit + (target - limit) * self.smoothing)
