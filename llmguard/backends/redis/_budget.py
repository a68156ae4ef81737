"""RedisLedger: a Budget's spend and reservations in Redis, shared by every process.

Made by ``RedisBackend.budget_ledger()`` (``Budget(..., backend=RedisBackend(url))``). The check
"does this reservation fit?" and the reservation are one Lua script, so processes never both
take the last dollars. Each reservation is a lease (renewed while its call runs): a process that
dies with calls in flight frees their reservations when the leases run out. Every settlement is
published on one channel per prefix; each process listens there and wakes its waiting calls.

Unlike rate limits, a budget never falls back to per-process limits while Redis is down (each
process would then spend the whole cap): reservations fail with ``BackendUnavailable`` and the
call is not sent (after ``ATTEMPTS`` tries: a reservation that got no answer is undone and
asked again; one that lands after its undo stays reserved until its lease ends, which errs on
the side of spending less). Settlements that cannot be written are retried until Redis takes
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..._core.errors import BackendUnavailable
from ..._core.sweep import SWEEP_AT, sweep
from . import _budget_scripts as scripts
from ._client import RETRY_INTERVAL, Connection, logger

__all__ = ["RedisLedger"]

#: Seconds a reservation lives without renewal (renewed every third of it while its call runs).
LEASE = 300.0
#: Commands of one ledger at Redis at once: redis-py's pool refuses a command beyond its
#: connections (100) instead of queueing it, and a burst of calls reserves and settles at once.
CONCURRENT = 32
#: Tries of a reservation whose answer did not come (a slow Redis) before the call is refused.
ATTEMPTS = 3
#: Seconds after which a waiting call asks Redis again without having heard a settlement (a
#: message lost to a reconnect, a lease that expired): a slow safety net, not a poll.
RECHECK = 2.0


#: A settlement's soft limit: (spend in nano-dollars, callback when this one reached it first).
_Soft = tuple[int, Callable[[], None]] | None


class _Ticket:
    __slots__ = ("member", "amount", "ends")

    def __init__(self, member: str, amount: int, ends: float | None) -> None:
        self.member, self.amount, self.ends = member, amount, ends


class RedisLedger:
    """A :class:`llmguard.BudgetLedger` in Redis (see the module docstring)."""

    __slots__ = ("connection", "recheck", "lease", "channel", "_listeners", "_held", "_pending",
                 "_seen", "_sweep_at", "_seq", "_task", "_subscriber", "_gate")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        #: Seconds between asks of a waiting call that hears no settlement.
        self.recheck: float | None = RECHECK
        self.lease = LEASE
        #: Where settlements are published.
        self.channel = f"{connection.prefix}:budget:settled"
        self._listeners: list[Callable[[str], None]] = []
        self._held: dict[str, dict[str, _Ticket]] = {}  # account -> member -> ticket in flight
        self._pending: list[tuple[str, _Ticket, int, _Soft]] = []  # settlements not taken yet
        self._seen: dict[str, tuple[int, int, float | None]] = {}  # last known totals
        self._sweep_at = SWEEP_AT
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._gate: asyncio.Semaphore | None = None  # made in the loop, at the first command

    async def _call(self, script: str, account: str, args: list[Any], what: str) -> Any:
        if self._gate is None:
            self._gate = asyncio.Semaphore(CONCURRENT)
        async with self._gate:
            return await self.connection.call(script, self._keys(account), args, what)

    def _keys(self, account: str) -> list[str]:
        tag = f"{self.connection.prefix}:budget:{{{account}}}"
        return [tag, f"{tag}:held"]

    async def reserve(self, account: str, amount: int, cap: int, ends: float | None
                      ) -> tuple[Any, int, int]:
        self._start()
        for _ in range(ATTEMPTS):
            self._seq += 1
            ticket = _Ticket(f"{self.connection.id}.{self._seq}:{amount}", amount, ends)
            try:
                result = await self._call(scripts.RESERVE, account,
                                          [ticket.member, amount, cap, self.lease, ends or 0],
                                          "reserving budget")
            except BaseException:
                # No answer (cancelled, timed out, on_error="fail"): the script may still have
                # run. A refund of a reservation that does not exist changes nothing.
                self._write(account, ticket, 0)
                raise
            if result is not None:
                break
            self._write(account, ticket, 0)  # no answer: undo it if it ran, then ask again
        else:  # on_error="local": a budget still fails closed (see the module)
            raise BackendUnavailable(
                f"Redis at {self.connection.shown_url} did not answer {ATTEMPTS} times, and a "
                "shared budget is never spent per process (each would spend the whole cap): "
                "the call was not sent; check the server, or raise RedisBackend(timeout=...)")
        admitted, spent, reserved = int(result[0]), int(result[1]), int(result[2])
        self._remember(account, spent, reserved, ends)
        if not admitted:
            return None, spent, reserved
        self._held.setdefault(account, {})[ticket.member] = ticket
        return ticket, spent, reserved

    def settle(self, account: str, ticket: Any, cost: int, *, soft: int | None = None,
               on_soft: Callable[[], None] | None = None) -> None:
        held = self._held.get(account)
        if held is not None:
            held.pop(ticket.member, None)
            if not held:
                del self._held[account]
        spent, reserved, ends = self._seen.get(account, (0, 0, ticket.ends))
        self._seen[account] = (spent + cost, max(0, reserved - ticket.amount), ends)
        self._write(account, ticket, cost, (soft, on_soft) if on_soft is not None else None)
        for callback in tuple(self._listeners):  # this process's waiters need no message
            callback(account)

    def _write(self, account: str, ticket: _Ticket, cost: int, soft: _Soft = None) -> None:
        self.connection.spawn(self._settle(account, ticket, cost, soft))

    async def _settle(self, account: str, ticket: _Ticket, cost: int, soft: _Soft = None) -> None:
        try:
            result = await self._call(
                scripts.SETTLE, account,
                [ticket.member, ticket.amount, cost, ticket.ends or 0, self.channel, account,
                 0 if soft is None else soft[0]], "settling budget")
        except BackendUnavailable:  # on_error="fail": a background write has no caller to fail
            result = None
        if result is None:  # kept and retried: a lost settlement would under-count the spend
            self._pending.append((account, ticket, cost, soft))
            self._start()
            return
        if account in self._seen:
            self._seen[account] = (int(result[0]), int(result[1]), ticket.ends)
        if soft is not None and int(result[2]) == 1:  # this settlement set the account's flag
            soft[1]()

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def totals(self, account: str) -> tuple[int, int]:
        spent, reserved, _ = self._seen.get(account, (0, 0, None))
        return spent, reserved

    async def read(self, account: str) -> tuple[int, int]:
        async def command() -> Any:
            return await self.connection.redis.hmget(self._keys(account)[0], "spent", "reserved")

        result = await self.connection.run(command, "reading budget")
        if result is None:
            return self.totals(account)
        return int(result[0] or 0), int(result[1] or 0)

    def _remember(self, account: str, spent: int, reserved: int, ends: float | None) -> None:
        if account not in self._seen and len(self._seen) >= self._sweep_at:
            import time

            now = time.time()
            self._sweep_at = sweep(self._seen, lambda seen: seen[2] is not None and seen[2] < now)
        self._seen[account] = (spent, reserved, ends)

    def _start(self) -> None:
        """Start the listener (settlements of other processes) and the upkeep (lease renewal,
        settlements to retry) in this loop, once."""
        loops = self.connection.loops  # aclose() cancels them
        if self._subscriber is None or self._subscriber.done():
            self._subscriber = asyncio.get_running_loop().create_task(self._listen())
            loops.add(self._subscriber)
            self._subscriber.add_done_callback(loops.discard)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._upkeep())
            loops.add(self._task)
            self._task.add_done_callback(loops.discard)

    async def _listen(self) -> None:
        while True:
            pubsub = self.connection.redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self.connection.timeout):  # (no socket_timeout)
                    await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    account = message.get("data")
                    if isinstance(account, bytes):
                        account = account.decode()
                    for callback in tuple(self._listeners):
                        callback(account)
            except Exception as exc:  # a dropped connection: waiters still recheck
                logger.debug("llmguard: budget listener lost Redis (%s); reconnecting", exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
            await asyncio.sleep(RETRY_INTERVAL)

    async def _upkeep(self) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.lease / 3
        while self._held or self._pending:
            await asyncio.sleep(RETRY_INTERVAL)
            pending, self._pending = self._pending, []
            for account, ticket, cost, soft in pending:
                await self._settle(account, ticket, cost, soft)  # puts it back on failure
            if loop.time() >= renew_at:
                renew_at = loop.time() + self.lease / 3
                for account, held in list(self._held.items()):
                    try:
                        await self._call(scripts.RENEW, account, [self.lease, *held],
                                         "renewing budget leases")
                    except BackendUnavailable:
                        pass  # on_error="fail": tried again at the next renewal

    def __repr__(self) -> str:
        return (f"<RedisLedger prefix={self.connection.prefix!r} accounts_in_flight="
                f"{len(self._held)} pending={len(self._pending)}>")
