"""The one clock (the running loop's) and the one backoff formula every waiting loop uses."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

__all__ = ["backoff", "now", "pin_wall", "wall"]


def now() -> float:
    """Loop time inside a loop (what ``looptime`` fakes); the same monotonic clock (asyncio's
    default) outside one, e.g. for ``statistics()`` read from a thread or at the REPL."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def backoff(attempt: int, base: float, cap: float, rand: float | None = None, *,
            equal: bool = False) -> float:
    """Capped exponential backoff: the ceiling ``min(cap, base * 2**(attempt - 1))``.

    ``attempt`` counts from 1. ``rand`` in [0, 1) adds jitter: *full* jitter (uniform in
    ``[0, ceiling)``, AWS architecture blog) by default, *equal* jitter (half the ceiling fixed,
    half random) with ``equal=True``, for callers that must not come back at once. Without
    ``rand`` it returns the ceiling.
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    if rand is None:
        return ceiling
    return ceiling / 2 * (1 + rand) if equal else ceiling * rand


_WALL_OFFSET: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

#: The epoch the wall clock is pinned to (:func:`pin_wall`), or None: the real one.
_PINNED: float | None = None


def wall() -> float:
    """Wall-clock seconds since the epoch (``time.time()``) in step with the loop clock: loop
    time plus the offset between the two, taken once per loop. Clock-minute boundaries (a
    gateway's per-minute counter) are wall-clock times; under ``looptime``'s virtual clock
    they then move virtually too, the same for a simulated server and for the client.
    Pinned (:func:`pin_wall`): the pinned epoch plus loop time, whatever the time of day."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.time() if _PINNED is None else _PINNED + time.monotonic()
    if _PINNED is not None:
        return _PINNED + loop.time()
    offset = _WALL_OFFSET.get(loop)
    if offset is None:
        offset = _WALL_OFFSET[loop] = time.time() - loop.time()
    return loop.time() + offset


def pin_wall(epoch: float | None) -> float | None:
    """Make :func:`wall` read ``epoch`` plus loop time from now on (None: the real clock
    again), so what depends on the time of day (a clock minute's boundary, a reset given as a
    date) is the same in every run; returns the previous pin, for restoring it
    (``llmguard.testing.virtual_wall_clock``)."""
    global _PINNED
    previous, _PINNED = _PINNED, epoch
    return previous
