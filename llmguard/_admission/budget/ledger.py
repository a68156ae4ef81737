"""Where a Budget's spend and reservations live: the ``BudgetLedger`` seam and the in-memory one.

An *account* is one budget for one key and one window (``"budget|s:tenant-a|2026-12-06"``);
amounts are integer nano-dollars (``prices``). The Redis ledger
(``llmguard.backends.redis``) applies the same contract atomically across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

from ..._core.public import public
from ..._core.sweep import SWEEP_AT, sweep

__all__ = ["BudgetLedger", "MemoryLedger", "account_of", "ledger_of"]


@public
@runtime_checkable
class BudgetLedger(Protocol):
    """What a :class:`~llmguard.Budget` drives: spend and reservations per account, in integer
    nano-dollars. Pass one as ``Budget(backend=...)`` (several Budgets may share it), or pass a
    backend whose ``budget_ledger()`` returns one (``RedisBackend``). The contract:

    * ``reserve(account, amount, cap, ends)`` atomically adds ``amount`` to the account's
      reserved total if ``spent + reserved + amount <= cap``, and returns ``(ticket, spent,
      reserved)`` after the decision: a ticket (any object but None) when it fitted, None (and
      nothing changed) when it did not. ``ends`` is the Unix time the account's window ends
      (None: never); a ledger may forget the account some time after it.
    * ``settle(account, ticket, cost, *, soft=None, on_soft=None)``: the reservation of
      ``ticket`` ends; its amount leaves the reserved total and ``cost`` (0 for a refund; may
      exceed the amount) joins the spent one. Synchronous (it runs on cleanup paths; a remote
      ledger writes in the background), called exactly once per ticket. Then every ``listen``
      callback is called with the account. ``soft`` (given with ``on_soft``): when the spent
      total is ``soft`` or more after this settlement and no settlement of the account did that
      before (in any process sharing the ledger: an atomic flag of the account), call
      ``on_soft()``, once.
    * ``listen(callback)``: call ``callback(account)`` whenever room may have opened in an
      account (a settlement here or, for a shared ledger, in another process).
    * ``totals(account)``: ``(spent, reserved)`` as last known here (synchronous);
      ``await read(account)``: the same, asked of the ledger itself.
    * ``recheck``: seconds after which a waiting call asks again even if no ``listen`` callback
      came (a shared ledger can miss one), or None when every settlement is heard.
    """

    recheck: float | None

    async def reserve(self, account: str, amount: int, cap: int, ends: float | None
                      ) -> tuple[Any, int, int]: ...

    def settle(self, account: str, ticket: Any, cost: int, *, soft: int | None = None,
               on_soft: Callable[[], None] | None = None) -> None: ...

    def listen(self, callback: Callable[[str], None]) -> None: ...

    def totals(self, account: str) -> tuple[int, int]: ...

    async def read(self, account: str) -> tuple[int, int]: ...


class _Account:
    __slots__ = ("spent", "reserved", "ends", "softened")

    def __init__(self, ends: float | None) -> None:
        self.spent = self.reserved = 0
        self.ends = ends
        self.softened = False


@public
class MemoryLedger:
    """A :class:`BudgetLedger` in this process (the default of every Budget). Accounts of
    windows that ended are forgotten (swept whenever their number has doubled), so a key per
    user stays bounded; a total (no window) is kept."""

    __slots__ = ("recheck", "_accounts", "_listeners", "_sweep_at")

    def __init__(self) -> None:
        #: Every settlement is heard here: a waiting call never needs to ask again.
        self.recheck: float | None = None
        self._accounts: dict[str, _Account] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._sweep_at = SWEEP_AT

    async def reserve(self, account: str, amount: int, cap: int, ends: float | None
                      ) -> tuple[Any, int, int]:
        state = self._accounts.get(account)
        if state is None:
            if len(self._accounts) >= self._sweep_at:
                now = time.time()
                self._sweep_at = sweep(self._accounts, lambda a: a.reserved == 0 and
                                       a.ends is not None and a.ends < now)
            state = self._accounts[account] = _Account(ends)
        if state.spent + state.reserved + amount > cap:
            return None, state.spent, state.reserved
        state.reserved += amount
        return amount, state.spent, state.reserved

    def settle(self, account: str, ticket: Any, cost: int, *, soft: int | None = None,
               on_soft: Callable[[], None] | None = None) -> None:
        state = self._accounts.get(account)
        if state is None:  # swept: only an ended window with nothing reserved is, so not ours
            state = self._accounts[account] = _Account(time.time())
        state.reserved -= ticket
        state.spent += cost
        if soft is not None and on_soft is not None and state.spent >= soft and \
                not state.softened:
            state.softened = True
            on_soft()
        for callback in tuple(self._listeners):
            callback(account)

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def totals(self, account: str) -> tuple[int, int]:
        state = self._accounts.get(account)
        return (0, 0) if state is None else (state.spent, state.reserved)

    async def read(self, account: str) -> tuple[int, int]:
        return self.totals(account)

    def __repr__(self) -> str:
        return f"<MemoryLedger accounts={len(self._accounts)}>"


def ledger_of(backend: Any) -> BudgetLedger:
    """The ledger a Budget's ``backend=`` names (None: a new MemoryLedger)."""
    if backend is None:
        return MemoryLedger()
    if callable(getattr(backend, "budget_ledger", None)):
        return backend.budget_ledger()
    if isinstance(backend, BudgetLedger):
        return backend
    raise TypeError(f"backend must be a llmguard.backends.redis.RedisBackend (shared across "
                    f"processes), a BudgetLedger, or None (this process), got {backend!r}")


def account_of(name: str, key: Hashable, label: str) -> str:
    """The account of budget ``name``'s ``key`` in window ``label``."""
    # None, "" and 1 vs "1" never share an account (as RedisBackend's rate-limit keys).
    part = "" if key is None else f"s:{key}" if isinstance(key, str) else \
        f"r:{type(key).__name__}={key!r}"
    return f"{name}|{part}|{label}"
