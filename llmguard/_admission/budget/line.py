"""Calls waiting for room under a budget: FIFO per account, only the head asks the ledger.

A call whose reservation does not fit waits only while calls in flight may free room: the head
of the account's line sleeps on a future that a settlement sets (the ledger's ``listen``), so
waiting costs nothing between settlements (no polling; a shared ledger adds a slow ``recheck``
for settlements it may not hear). It gives up (:class:`BudgetExceeded`, raised by the
``refuse`` callback) as soon as ``spent + amount > cap``: then nothing in flight, even settling
at zero, can make it fit. Calls behind the head wait for their turn on their own future, so a
settlement wakes one call, not the whole line.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from .ledger import BudgetLedger

__all__ = ["Line", "Lines"]


class Line:
    """One account's waiters (their turn futures, the head's first) and the head's wake-up."""

    __slots__ = ("turns", "room")

    def __init__(self) -> None:
        self.turns: deque[asyncio.Future[None]] = deque()
        self.room: asyncio.Future[None] | None = None


class Lines:
    """The lines of every account with waiters (empty when nobody waits)."""

    __slots__ = ("ledger", "lines", "waiting")

    def __init__(self, ledger: BudgetLedger) -> None:
        self.ledger = ledger
        self.lines: dict[str, Line] = {}
        #: Calls waiting now, over all accounts.
        self.waiting = 0

    def wake(self, account: str) -> None:
        """Room may have opened in ``account``: its head asks the ledger again."""
        line = self.lines.get(account)
        if line is not None and line.room is not None and not line.room.done():
            line.room.set_result(None)

    async def admit(self, account: str, amount: int, cap: int, ends: float | None,
                    refuse: Callable[[int, int], BaseException]) -> Any:
        """Reserve ``amount`` in ``account``: the ticket, after waiting if it must; raises
        ``refuse(spent, reserved)`` once it can never fit."""
        ledger = self.ledger
        if account not in self.lines:  # nobody waiting: ask at once
            ticket, spent, reserved = await ledger.reserve(account, amount, cap, ends)
            if ticket is not None:
                return ticket
            if spent + amount > cap:
                raise refuse(spent, reserved)
        loop = asyncio.get_running_loop()
        line = self.lines.get(account)
        if line is None:
            line = self.lines[account] = Line()
        turn: asyncio.Future[None] = loop.create_future()
        line.turns.append(turn)
        if line.turns[0] is turn:
            turn.set_result(None)
        self.waiting += 1
        try:
            await turn
            while True:
                # Made before asking, so a settlement heard during a remote round trip counts.
                room = line.room = loop.create_future()
                ticket, spent, reserved = await ledger.reserve(account, amount, cap, ends)
                if ticket is not None:
                    return ticket
                if spent + amount > cap:
                    raise refuse(spent, reserved)
                recheck = ledger.recheck
                handle = None if recheck is None else loop.call_later(recheck, _set, room)
                try:
                    await room
                finally:
                    if handle is not None:
                        handle.cancel()
        finally:
            self.waiting -= 1
            head = line.turns[0] is turn
            if head:
                line.turns.popleft()
                line.room = None
            else:
                line.turns.remove(turn)
            if not line.turns:
                if self.lines.get(account) is line:
                    del self.lines[account]
            elif head:
                _set(line.turns[0])  # the next call asks now (it may fit where this did not)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
