"""The output part of :class:`~.split_backend.SplitBackend`: its reservations tracked for the
give-back verdict (:mod:`.giveback`: does the server give unused output back?), the requests
it never charged, and its output readings; and :class:`GiveBacks`, the verdict of each key."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from ..._core import clock
from ..._core.sweep import SWEEP_AT, sweep
from .giveback import GiveBack
from .headers import sent
from .split import Part, Ticket, amount as _amount
from .window import Quota

__all__ = ["GiveBackParts", "GiveBacks"]


class GiveBackParts:
    """Mixin of :class:`~.split_backend.SplitBackend` (``inner``, ``giveback`` and
    ``_layout`` are its): the output reservations seen by the key's :class:`.giveback.GiveBack`."""

    __slots__ = ()
    inner: Any
    giveback: GiveBacks

    def _layout(self, quotas: tuple[Quota, ...]) -> list[tuple[str, tuple[Quota, ...]]]:
        raise NotImplementedError  # SplitBackend's

    def part_headroom(self, key: Hashable, quotas: tuple[Quota, ...], part: str) -> int | None:
        raise NotImplementedError  # SplitBackend's

    def _admitted(self, key: Hashable, quotas: tuple[Quota, ...], ticket: Ticket) -> Ticket:
        if (entry := self._entry(ticket, "output")) is not None:
            now, output = asyncio.get_running_loop().time(), _amount("output", ticket.tokens)
            back = self.giveback.track(key, quotas, now)
            # what another process learned (a shared backend: the verdict Redis returned with
            # this reservation), when it differs from what this one last shared or adopted;
            # not while this one's own write is on its way: a reply may still hold the verdict
            # it replaces (this process's own earlier one among them)
            shared, telling = getattr(entry, "giveback", None), back.telling
            if shared is not None and (shared[0], shared[2]) != (back.told, back.told_doubt) \
                    and (telling is None or telling.done()):
                self._charge(key, quotas, back.adopt(*shared))
            back.admitted(now, output, entry, lambda: (
                self.part_headroom(key, quotas, "output") or 0) + output, clock.wall())
        return ticket

    def _hold(self, key: Hashable, tokens: Any) -> float:
        """Seconds a reservation of ``tokens`` waits for the give-back test in doubt across
        a clock minute (:mod:`.giveback_minute`; 0.0: none)."""
        back = self.giveback.get(key)
        if back is None or not back.minute.open:
            return 0.0
        return back.minute.hold(clock.wall(), _amount("output", tokens), back.quota)

    def _uncharged(self, key: Hashable, ticket: Any, quotas: Any = None,
                   named: Any = None) -> bool:
        """Never sent, or refused (``quotas``; the quota its message ``named``, None: any):
        True when the 429 showed output kept charged."""
        if (back := self.giveback.get(key)) is None or not (out := self._entry(ticket, "output")):
            return False
        again = back.refused(out, named is None or named.part == "output") if quotas else 0
        back.uncharged(_amount("output", ticket.tokens), out)
        self._charge(key, quotas, again)  # the test failed: what it gave back, charged again
        self._tell(key, back)
        return bool(again)

    def _charge(self, key: Hashable, quotas: tuple[Quota, ...], again: int) -> None:
        if again:
            sent(self.inner, dict(self._layout(quotas))["output"], Part("output", key), again,
                 None)

    def _tell(self, key: Hashable, back: GiveBack) -> None:
        """Share a verdict this process reached on its own evidence, over a backend that
        shares one (Redis: ``backends.redis._giveback``), so no other process tests again."""
        doubt = back.verdict is True and back.minute.open  # (:mod:`.giveback_minute`)
        if back.verdict is not None and callable(getattr(self.inner, "giveback", None)) \
                and (back.verdict, doubt) != (back.told, back.told_doubt):
            back.told, back.told_doubt = back.verdict, doubt
            back.telling = self.inner.giveback(Part("output", key), back.verdict, back.why, doubt)

    def read_output(self, key: Hashable, remaining: int, limit: int, ticket: Any = None,
                    started: bool = False) -> None:
        """The server's output ``remaining`` of ``limit`` (in the answer to ``ticket``'s
        request, if known; ``started``: as its stream started): does it give unused output
        back?"""
        if back := self.giveback.get(key):
            back.read(asyncio.get_running_loop().time(), remaining, limit, clock.wall(),
                      self._entry(ticket, "output"), started)
            self._tell(key, back)

    @staticmethod
    def _entry(ticket: Any, part: str) -> Any:
        """The reservation of ``ticket`` in the ``part`` quotas (None: not one of ours)."""
        if isinstance(ticket, Ticket):
            for _, entry, taken in ticket.taken:
                if taken == part:
                    return entry
        return None


class GiveBacks(dict):  # type: ignore[type-arg]
    """The :class:`GiveBack` of each partition (key) of a layer. Keys come and go (``key=``
    per user): a partition with no answer held back and nothing admitted for a window is
    forgotten whenever the map has doubled since the last sweep (:mod:`..._core.sweep`), as
    the in-memory backend forgets its idle windows; it learns again if it comes back (kept
    charged meanwhile: the safe side)."""

    __slots__ = ("sweep_at",)

    def __init__(self) -> None:
        super().__init__()
        self.sweep_at = SWEEP_AT

    def track(self, key: Any, quotas: tuple[Any, ...], now: float) -> GiveBack:
        """The :class:`GiveBack` of ``key`` (made when missing), its ``spread`` the margin of
        the output ``quotas`` (it changes as the layer measures the send latency)."""
        output = [q for q in quotas if q.part == "output"]
        spread = max(q.margin for q in output) or 0.5  # the time ours take to get there
        back = self.get(key)
        if back is None:
            if len(self) >= self.sweep_at:
                self.sweep_at = sweep(self, lambda back: back.idle(now))
            back = self[key] = GiveBack(spread, max(q.window for q in output))
        back.spread, back.quota = spread, max(q.limit for q in output)
        back.minute.period = max(q.window - q.margin for q in output)  # the server's
        return back
