"""What AdaptiveConcurrency learns from calls: per-round-trip windows and the answer-length fit.

Plain objects without a loop or a limiter, so their arithmetic is tested directly;
:class:`~llmguard._admission.adaptive.AdaptiveConcurrency` feeds them every call's latency.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["TokenModel", "Window", "trimmed_mean"]


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean of ``values`` without their lowest and highest ``cut`` shares."""
    ordered = sorted(values)
    drop = int(len(ordered) * cut)
    kept = ordered[drop: len(ordered) - drop]
    return sum(kept) / len(kept)


class TokenModel:
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
        if var_t <= 1e-9 * mean_t * mean_t:
            return rtt  # lengths do not vary (yet): nothing to remove
        if self.n < 20:
            return None  # a raw rtt now would set a floor that normalised ones never reach
        slope = (self.tr / self.n - mean_t * self.r / self.n) / var_t
        if slope <= 0:
            return rtt  # latency does not grow with length here
        base = max(0.0, (self.r / self.n - slope * mean_t) / slope)  # a / b, in tokens
        return rtt * (base + mean_t) / (base + tokens)


class Window:
    """Samples of one round trip: typical RTT and in-flight count of successes, share of drops."""

    __slots__ = ("count", "rtts", "inflights", "inflight", "drops", "overloads")

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
        self.inflights: list[int] = []

    def add(self, rtt: float, inflight: int, dropped: bool, overload: bool = False) -> None:
        self.count += 1
        self.inflight = max(self.inflight, inflight)
        if dropped:
            self.drops += 1
            self.overloads += overload
        else:
            self.rtts.append(rtt)
            self.inflights.append(inflight)

    def flush(self) -> tuple[float, int, bool, bool, float]:
        """The window as one sample (RTT, in-flight, dropped, only by 429s, the RTT's standard
        error), and start a new one.

        The RTT is the mean without the slowest and the fastest 10%: one 8 s latency spike in
        a window of 30 one-second calls would move the mean by 25% and shrink the limit, while
        the median of 5 calls at capacity 4 stays at the floor when one of them queued (+25%). The in-flight
        count is the median of the successes' (the count when each started), so it goes with
        the RTT: right after an increase most of a window's calls started under the old limit.
        """
        # The busier half of the window: calls started at or above its median in-flight count.
        inflights = self.inflights
        if inflights:
            edge = sorted(inflights)[len(inflights) // 2]
            rtts = [rtt for rtt, n in zip(self.rtts, inflights) if n >= edge]
            inflights = [n for n in inflights if n >= edge]
        else:
            rtts = []
        sample = (trimmed_mean(rtts) if rtts else 0.0,
                  statistics.median_low(inflights) if inflights else self.inflight,
                  self.drops > self.DROP_SHARE * self.count, not self.overloads,
                  statistics.stdev(rtts) / math.sqrt(len(rtts)) if len(rtts) > 1 else 0.0)
        self._reset()
        return sample

