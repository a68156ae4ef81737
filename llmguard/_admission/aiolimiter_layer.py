"""An ``aiolimiter.AsyncLimiter`` the user already holds, as a layer.

Code that rate-limits with aiolimiter (``async with limiter: await client.create(...)``) can put
that same limiter in a pipeline, ``lg.guard(AsyncLimiter(100, 60), lg.Retry())``, and every
call then takes one unit of it before going on: its rate holds across the pipeline and whatever
else acquires it directly. aiolimiter is never imported here (the limiter brings it).

Why RateLimit stays the default: aiolimiter counts an acquisition for good (nothing is given
back when the call never reaches the provider, and a 429 cannot pause it), its waiters sit in a
heap keyed by amount (a large request waits behind a stream of small ones), and it has one
quota per limiter; ``benchmarks/bench_ratelimit.py`` measures it at 82.5% of the binding quota
with 73 429s where RateLimit uses 99.0% with none. Per call the adapter is the cheaper one
(``benchmarks/bench_adapters.py``: 10.2 against RateLimit's 12.6 µs over a bare await, 0.81x),
which buys none of that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .._core.call import Call
from .._core.layer import Handler

__all__ = ["Aiolimiter", "AiolimiterStats", "is_aiolimiter"]


def is_aiolimiter(obj: Any) -> bool:
    """True for an ``aiolimiter.AsyncLimiter`` (or anything with its interface)."""
    return (callable(getattr(obj, "acquire", None)) and callable(getattr(obj, "has_capacity", None))
            and isinstance(getattr(obj, "max_rate", None), (int, float))
            and isinstance(getattr(obj, "time_period", None), (int, float)))


@dataclass(frozen=True, slots=True)
class AiolimiterStats:
    """A snapshot of an ``AsyncLimiter`` used as a layer."""

    max_rate: float
    time_period: float
    #: Calls that took a unit and went on.
    admitted: int
    #: Calls waiting for a unit now (0 once every waiter left: nothing leaks).
    waiting: int


class Aiolimiter:
    """Layer (its statistics are ``stats()["aiolimiter"]``): each call acquires one unit of ``limiter`` (an ``aiolimiter.AsyncLimiter``), then
    goes on. A call cancelled while it waits takes nothing (aiolimiter drops its waiter); the
    wait is recorded (``record.wait``, ``delayed_by="aiolimiter"``) as any limiter's. Pipelines
    build it for you when given an ``AsyncLimiter`` as a layer."""

    __slots__ = ("limiter", "_admitted", "_waiting")

    def __init__(self, limiter: Any) -> None:
        if not is_aiolimiter(limiter):
            raise TypeError(f"expected an aiolimiter.AsyncLimiter, got {limiter!r}")
        #: The user's limiter (shared with whatever else acquires it).
        self.limiter = limiter
        self._admitted = self._waiting = 0

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        limiter = self.limiter
        if limiter.has_capacity():
            await limiter.acquire()  # room now: returns without waiting
        else:
            clock = asyncio.get_running_loop().time
            start = clock()
            self._waiting += 1
            call.queueing()  # an outer rate limit's reservation waits here, not sent
            try:
                await limiter.acquire()
            finally:
                self._waiting -= 1
            await call.waited(clock() - start, "aiolimiter")
        self._admitted += 1
        return await call_next(call)

    def statistics(self) -> AiolimiterStats:
        limiter = self.limiter
        return AiolimiterStats(float(limiter.max_rate), float(limiter.time_period),
                               self._admitted, self._waiting)

    def __repr__(self) -> str:
        return (f"<Aiolimiter layer {self.limiter.max_rate:g} per {self.limiter.time_period:g} s "
                f"admitted={self._admitted} waiting={self._waiting}>")
