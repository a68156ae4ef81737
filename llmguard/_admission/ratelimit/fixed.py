"""A learned fixed window: at most ``limit`` units per window ``[epoch + i * W, epoch + (i + 1) * W)``.

Against a server that counts per fixed window (a clock minute, LiteLLM's proxy and many
gateways), a sliding log started mid-window waits a whole window after each burst, where the
server would admit a full quota again at its next boundary. Once the boundary is learned
(:mod:`.shape`), this count paces to it.

``margin`` covers the time from admission here to arrival there: an admission within ``margin``
before a boundary may be counted by the server in either window, so it counts in both.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["FixedCount"]


class FixedCount:
    """Units admitted per fixed window, kept for the current and the next window only."""

    __slots__ = ("limit", "window", "margin", "epoch", "tokens", "counts")

    def __init__(self, limit: int, window: float, margin: float, epoch: float,
                 tokens: bool) -> None:
        self.limit = limit  #: units per window (the learned limit, at most the quota)
        self.window = window  #: the server's window, seconds
        self.margin = margin  #: seconds an admission may take to arrive
        self.epoch = epoch  #: a window boundary (loop time)
        self.tokens = tokens
        self.counts: dict[int, int] = {}

    def index(self, t: float) -> int:
        return math.floor((t - self.epoch) / self.window)

    def boundary(self, index: int) -> float:
        """Loop time at which window ``index`` starts."""
        return self.epoch + index * self.window

    def _indices(self, t: float) -> tuple[int, ...]:
        first, last = self.index(t), self.index(t + self.margin)
        return (first,) if first == last else (first, last)

    def _weight(self, entry: Any) -> int:
        return entry.tokens if self.tokens else entry.live

    def rebuild(self, now: float, entries: Iterable[Any]) -> None:
        """Count ``entries`` (a log's, oldest first) into their windows."""
        self.counts = {}
        for entry in entries:
            self.add(now, entry)

    def add(self, now: float, entry: Any) -> None:
        counts = self.counts
        for index in self._indices(entry.time):
            counts[index] = counts.get(index, 0) + self._weight(entry)
        if len(counts) > 3:  # windows before the current one no longer matter
            current = self.index(now)
            for index in [i for i in counts if i < current]:
                del counts[index]

    def adjust(self, entry: Any, tokens: int, live: int) -> None:
        delta = (tokens - entry.tokens) if self.tokens else (live - entry.live)
        for index in self._indices(entry.time):
            if index in self.counts:
                self.counts[index] += delta

    def _room(self, index: int, need: int) -> bool:
        used = self.counts.get(index, 0)
        return used + need <= self.limit or used <= 0  # larger than a window: alone in one

    def fits(self, now: float, tokens: int) -> bool:
        need = tokens if self.tokens else 1
        return all(self._room(index, need) for index in self._indices(now))

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` more fits: the start of the first window with room."""
        at = now
        for _ in range(4):
            blocked = [index for index in self._indices(at) if not self._room(index, need)]
            if not blocked:
                return at - now
            at = self.boundary(max(blocked) + 1)
        return at - now

    def idle(self, now: float) -> bool:
        current = self.index(now)
        return not any(used > 0 for index, used in self.counts.items() if index >= current)

    def available(self, now: float) -> int:
        return self.limit - max(self.counts.get(index, 0) for index in self._indices(now))

    def __repr__(self) -> str:
        return f"<FixedCount limit={self.limit} per {self.window:g} s epoch={self.epoch:g}>"
