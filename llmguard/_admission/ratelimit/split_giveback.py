"""The output part of :class:`~.split_backend.SplitBackend`: its reservations tracked for the
give-back verdict (:mod:`.giveback`: does the server give unused output back?), the requests
it never charged, and its output readings."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from .giveback import GiveBack, GiveBacks
from .headers import sent
from .split import Part, Ticket, amount as _amount
from .window import Quota

__all__ = ["GiveBackParts"]


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
            if shared is not None and shared[0] is not back.told \
                    and (telling is None or telling.done()):
                self._charge(key, quotas, back.adopt(*shared))
            back.admitted(now, output, entry, lambda: (
                self.part_headroom(key, quotas, "output") or 0) + output)
        return ticket

    def _uncharged(self, key: Hashable, ticket: Any, quotas: Any = None) -> bool:
        """Never sent, or refused (``quotas``): True when the 429 showed output kept charged."""
        if (back := self.giveback.get(key)) is None or not (out := self._entry(ticket, "output")):
            return False
        again = back.refused(out) if quotas else 0
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
        if back.verdict is not None and back.verdict is not back.told \
                and callable(getattr(self.inner, "giveback", None)):
            back.told = back.verdict
            back.telling = self.inner.giveback(Part("output", key), back.verdict, back.why)

    def read_output(self, key: Hashable, remaining: int, limit: int) -> None:
        """The server's output ``remaining`` of ``limit``: does it give unused output back?"""
        if back := self.giveback.get(key):
            back.read(asyncio.get_running_loop().time(), remaining, limit)
            self._tell(key, back)

    @staticmethod
    def _entry(ticket: Any, part: str) -> Any:
        """The reservation of ``ticket`` in the ``part`` quotas (None: not one of ours)."""
        if isinstance(ticket, Ticket):
            for _, entry, taken in ticket.taken:
                if taken == part:
                    return entry
        return None
