"""Forgetting per-key state that no longer matters, so maps keyed by user or tenant stay bounded.

Keys come and go (a ``key=`` per user, a cache key per prompt), so a map that only grows leaks in
a long-running process. Each such map sweeps itself when it has doubled since the last sweep:
one pass over the entries after as many insertions, O(1) amortised per new key, and the map
stays within about twice the entries still live. Only entries equal to what a missing entry
means (or that can be rebuilt) are dropped, so a sweep changes no answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["SWEEP_AT", "sweep"]

#: Fewest entries before a map looks for stale ones to forget (small maps are not worth a pass).
SWEEP_AT = 64

V = TypeVar("V")


def sweep(entries: dict[Hashable, V], stale: Callable[[V], bool]) -> int:
    """Drop every entry for which ``stale(value)``; return the size at which to sweep next."""
    for key in [key for key, value in entries.items() if stale(value)]:
        del entries[key]
    return max(SWEEP_AT, 2 * len(entries))
