"""The base of the limit algorithms, and what they share (argument checks, a moving average).

An algorithm is a plain object with ``on_sample(rtt, inflight, dropped) -> new_limit`` (Netflix
concurrency-limits' ``Limit.onSample``); the algorithms themselves are in ``algorithms.py`` and
``gradient.py``.
"""

from __future__ import annotations

from typing import Any

from .._core.check import number
from .._core.public import public

__all__ = ["EWMA", "LimitAlgorithm", "check_fraction", "check_tolerance"]


def check_fraction(name: str, value: Any, *, high_open: bool = False) -> float:
    """``value`` checked as a fraction in (0, 1] (or (0, 1) with ``high_open``)."""
    what = f"a fraction in (0, 1{')' if high_open else ']'}"
    return float(number(name, value, high=1, high_open=high_open, what=what))


def check_tolerance(value: Any) -> float:
    """``value`` checked as a latency tolerance (a ratio >= 1)."""
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

    def on_window(self, rtt: float, inflight: int, dropped: bool, error: float) -> float:
        """What :class:`AdaptiveConcurrency` calls once per round trip: :meth:`on_sample` plus
        ``error``, the standard error (seconds) of ``rtt`` over the window's calls. An
        algorithm that can tell noise from queueing with it overrides this (``Gradient``)."""
        return self.on_sample(rtt, inflight, dropped)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self.limit:.2f})"


class EWMA:
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
