"""The give-back test (:mod:`.giveback`) across a clock minute.

With no output reading heard, one answer's unused output at a time is given back, and the
request admitted only thanks to it tests the server: served, it gives unused output back. That
holds against a bucket keeping ``max_tokens`` charged (ours full, it refuses the test) but not
against a window counting per clock minute: a burst sent at :58 and answered after :00 frees
the test's room there whether the server gives back or not (its count started afresh). Taken
for a give-back, every answer's unused output was given back and a gateway keeping
``max_tokens`` charged refused 3-6 requests a minute, every minute (37 429s from :58).

So the test also counts ours reserved in the clock minute (``max_tokens`` each, as such a
window would): a served test that window would have refused as well decides as before; one it
had room for gives unused output back only provisionally (the server gives back, or its window
started afresh), the unused output given back since (``lent``) kept aside. A 429 then (the
window ``max_tokens`` fills, one not explained by another quota) refutes the give-back: it is
kept charged from then on and what was lent is charged again. A request of ours served beyond
what that window holds refutes the window instead: the give-back stands.

Everything here takes its times as arguments (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["Minute"]


class Minute:
    """Ours reserved per clock minute of ``period`` s (``used`` in the one of ``index``), and
    while a served test is in doubt (``open``), the unused output given back (``lent``:
    ``(ended at, unused)`` within a period) and the first request of ours beyond what the
    minute holds (``beyond``: served, the doubt ends)."""

    __slots__ = ("period", "index", "used", "open", "lent", "beyond", "offset")

    def __init__(self, period: float) -> None:
        self.period = period
        self.index, self.used = -math.inf, 0
        self.open = False
        self.lent: deque[tuple[float, int]] = deque()
        self.beyond: Any = None
        self.offset = 0.0  # the wall clock less loop time, at the last admission

    def admitted(self, wall: float, output: int, quota: int, entry: Any) -> bool:
        """Ours reserved ``output`` (``entry``) at ``wall`` (the wall clock): True when a
        window counting ``max_tokens`` per clock minute up to ``quota`` would refuse it."""
        self.offset = wall - getattr(entry, "time", wall)
        index = math.floor(wall / self.period)
        if index != self.index:
            self.index, self.used, self.beyond = index, 0, None
        self.used += output
        over = self.used > quota
        if over and self.open and self.beyond is None:
            self.beyond = entry
        return over

    def hold(self, wall: float, output: int, quota: int) -> float:
        """Seconds a reservation of ``output`` at ``wall`` waits while in doubt: one beyond
        what the minute's window holds tests it (a 429 at most); the others wait for its
        answer (a wake-up) or the next minute."""
        index = math.floor(wall / self.period)
        if not self.open or index != self.index or self.beyond is None \
                or self.used + output <= quota:
            return 0.0
        return (index + 1) * self.period - wall

    def doubt(self) -> None:
        """A served test that the clock minute had room for: the give-back is provisional."""
        self.open, self.beyond = True, None
        self.lent.clear()

    def given(self, now: float, unused: int, entry: Any) -> None:
        """``unused`` output of ``entry`` given back at ``now``, kept aside while in doubt
        when reserved in the clock minute (what a minute's window keeping it still counts)."""
        at = getattr(entry, "time", None)
        if self.open and unused > 0 and at is not None \
                and math.floor((at + self.offset) / self.period) == self.index:
            lent = self.lent
            lent.append((now, unused))
            while lent[0][0] < now - self.period:
                lent.popleft()

    def served(self, entry: Any) -> bool:
        """The request of ``entry`` was served: True when that ends the doubt (the minute's
        window would have refused it)."""
        if self.open and entry is not None and entry is self.beyond:
            self.settle()
            return True
        return False

    def shared(self, verdict: bool, doubt: bool) -> int:
        """Another process's ``verdict`` adopted (a shared backend), in ``doubt`` as it was
        there (shared as settled, a 429 here after a test a fresh minute explained refuted
        nothing): the doubt opened or ended as there; the output lent to charge again when
        it keeps it."""
        if not verdict:
            return self.refused() or 0
        if doubt and not self.open:
            self.doubt()
        elif not doubt:
            self.settle()
        return 0

    def settle(self) -> None:
        """The doubt ended: the give-back stands (one beyond the minute's window served,
        here or in another process sharing the verdict)."""
        self.open, self.beyond = False, None
        self.lent.clear()

    def refused(self) -> int | None:
        """A 429 while in doubt: the output tokens lent to charge again (None: no doubt)."""
        if not self.open:
            return None
        again = sum(unused for _, unused in self.lent)
        self.open, self.beyond = False, None
        self.lent.clear()
        return again
