"""The retry budget: retries as a fraction of calls, shared by every call of a Retry."""

from __future__ import annotations

from collections import deque

from .._core.check import number
from .._core.public import public

__all__ = ["RetryBudget"]


@public
class RetryBudget:
    """Retries allowed as a fraction of calls over a sliding window, shared by every call.

    When a provider is down every call fails; without a budget each caller retries ``attempts``
    times and the retries multiply the load on a provider that is already struggling. With
    ``ratio=0.2`` at most one retry per five calls (plus ``min_retries`` per window, so a quiet
    service can still retry) is spent in any ``window`` seconds.
    """

    __slots__ = ("ratio", "window", "min_retries", "_calls", "_retries")

    def __init__(self, ratio: float = 0.2, *, window: float = 60.0, min_retries: int = 10) -> None:
        number("ratio", ratio, low_open=False, high=10,
               what="a number of retries per call in [0, 10]")
        number("window", window, unit=" of seconds")
        number("min_retries", min_retries, integer=True, low_open=False)
        self.ratio, self.window, self.min_retries = float(ratio), float(window), min_retries
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for times in (self._calls, self._retries):
            while times and times[0] <= now - self.window:
                times.popleft()

    def record_call(self, now: float) -> None:
        self._calls.append(now)
        self._trim(now)

    def try_spend(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        self._trim(now)
        if len(self._retries) >= max(self.min_retries, self.ratio * len(self._calls)):
            return False
        self._retries.append(now)
        return True

    def __repr__(self) -> str:
        return (f"RetryBudget(ratio={self.ratio}, window={self.window}, "
                f"calls={len(self._calls)}, retries={len(self._retries)})")
