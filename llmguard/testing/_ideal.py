"""The soonest a server's quotas serve requests sent in order with a bound on those in flight:
the yardstick of :meth:`~llmguard.testing.QuotaServer.ideal_time` with ``in_flight`` (a
client's slots, a proxy's workers)."""

from __future__ import annotations

import heapq
import math
from typing import Any

from ._quota import FixedWindow, TokenBucket

__all__ = ["fresh", "in_order"]


def fresh(quota: Any) -> Any:
    """A quota configured as ``quota`` with nothing used (a server's after a run)."""
    if isinstance(quota, TokenBucket):
        return TokenBucket(quota.capacity, quota.window)
    if isinstance(quota, FixedWindow):
        return FixedWindow(quota.limit, quota.window, quota.epoch)
    return type(quota)(quota.limit, quota.window)


def in_order(quotas: list[tuple[Any, int]], n: int, start: float, service: float,
             in_flight: int, back: tuple[Any, int] | None = None) -> float:
    """Seconds from ``start`` until the last of ``n`` requests completes, each sent in order
    once one of ``in_flight`` is free and every quota of ``quotas`` (``(quota, amount)``
    pairs, used up here: pass :func:`fresh` ones) has room, and served ``service`` s;
    ``back``: ``(quota, amount)`` given back to that quota as each answer ends (Anthropic's
    unused output), room that counts from then on, not before."""
    free, end, at = [start] * in_flight, start, start
    ending: list[float] = []  # answers to end, whose ``back`` is not given yet
    for _ in range(n):
        at = max(at, heapq.heappop(free))  # taken in order (first come, first served)
        while True:  # the first instant with room (a hair past it: float rounding)
            while back is not None and ending and ending[0] <= at:
                back[0].give_back(heapq.heappop(ending), back[1])
            wait = max((quota.wait(at, amount) for quota, amount in quotas), default=0.0)
            if wait <= 0:
                break
            if math.isinf(wait) and not ending:
                return math.inf
            at = min(at + wait + 1e-9, ending[0]) if ending else at + wait + 1e-9
        for quota, amount in quotas:
            quota.take(at, amount)
        heapq.heappush(free, at + service)
        if back is not None:
            heapq.heappush(ending, at + service)
        end = max(end, at + service)
    return end - start
