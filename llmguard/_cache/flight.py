"""One single flight of a Cache: the fill under way and the callers waiting for it."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Flight"]


class Flight:
    """One fill under way and the futures of the callers waiting for it."""

    __slots__ = ("task", "waiters", "live", "landed")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        #: Every caller's future, in arrival order (a cancelled one stays, done).
        self.waiters: list[asyncio.Future[Any]] = []
        #: Waiters not cancelled; the last to leave early cancels the fill.
        self.live = 0
        #: True once the fill ended and resolved the waiters.
        self.landed = False
