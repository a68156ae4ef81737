"""The one clock (the running loop's) and the one backoff formula every waiting loop uses."""

from __future__ import annotations

import asyncio
import time

__all__ = ["backoff", "now"]


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
