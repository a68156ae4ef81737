"""Settlements of ``refill="auto"`` reservations on their way to Redis, fewest round trips.

Every reservation under ``refill="auto"`` is settled (its buckets count it outstanding until
then, to bound what a refund gives back), so a call costs two scripts: its reservation and its
settlement. A settlement is written in the background anyway (it runs on cleanup paths), so it
waits here for two loop turns: the next reservation of the same key and quotas made meanwhile
carries it in its own script (``_auto_scripts.RESERVE`` settles first: the order Redis saw
before), and the rest go in one ``_auto_scripts.SETTLE`` per key. A sequential caller's
settlement thus rides on its next reservation: one round trip per call instead of two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ..._admission.ratelimit.window import Quota
from . import _auto_scripts, _scripts
from ._client import Connection

__all__ = ["Settlements"]


class Settlements:
    """The settlements of one :class:`~llmguard.backends.redis._learning.RedisLearning` not
    sent yet: ``(names, quotas, SETTLE arguments of one settlement)``, in order."""

    __slots__ = ("connection", "args", "_queued", "_due", "_quiet")

    def __init__(self, connection: Connection,
                 args: Callable[[tuple[Quota, ...]], list[Any]]) -> None:
        #: ``args(quotas)``: the horizon then the per-quota arguments (``RedisLearning.args``).
        self.connection, self.args = connection, args
        self._queued: list[tuple[list[str], tuple[Quota, ...], list[Any]]] = []
        self._due = False
        #: Per state key queued: '1' when its server answered without any header (``_silent``).
        self._quiet: dict[str, str] = {}
        connection.flushers.append(self.flush)  # aclose() sends what is queued

    def add(self, names: list[str], quotas: tuple[Quota, ...], settlement: list[Any],
            quiet: str = "", after: asyncio.Task[Any] | None = None) -> None:
        """Queue one settlement (5 arguments); sent within two loop turns at the latest
        (``quiet``: ``_peek.quiet`` of its key). ``after``: the 429's write
        (``_refused_scripts.REFUSED``) it is sent after, by itself, unless it has landed: that
        marks its member refused, and once settled under its old name the member is found by
        neither (the 429 taught nothing, its tokens stayed counted)."""
        if after is not None and not after.done():  # (kept: retried until it lands)
            self.connection.follow(self._after(after, names, quotas, settlement, quiet))
            return
        self._queued.append((names, quotas, settlement))
        if quiet:
            self._quiet[names[1]] = quiet
        if not self._due:
            self._due = True
            # Two turns: a reservation that follows at once runs in a task made now (the
            # layer's line driver), whose first step comes after a callback scheduled now.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self.flush)

    def take(self, names: list[str], quotas: tuple[Quota, ...]) -> list[Any]:
        """Remove the settlements of ``names`` under ``quotas``: their arguments, flattened,
        for a reservation to carry."""
        queued = self._queued
        if not queued:
            return []
        carried: list[Any] = []
        kept = []
        for item in queued:
            if item[0][1] == names[1] and item[1] == quotas:
                carried += item[2]
            else:
                kept.append(item)
        self._queued = kept
        return carried

    def untake(self, names: list[str], quotas: tuple[Quota, ...], carried: list[Any]) -> None:
        """Queue again what :meth:`take` removed (the reservation that was to carry it never
        ran), ahead of what was queued since: the order they were settled in."""
        if not carried:
            return
        self._queued[:0] = [(names, quotas, carried[i:i + 5]) for i in range(0, len(carried), 5)]
        if not self._due:
            self._due = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self.flush)

    def flush(self) -> None:
        """Send what no reservation carried: one background script per key and quotas."""
        self._due = False
        queued, self._queued = self._queued, []
        quiet, self._quiet = self._quiet, {}
        groups: dict[tuple[str, tuple[Quota, ...]], tuple[list[str], list[Any]]] = {}
        for names, quotas, settlement in queued:
            group = groups.setdefault((names[1], quotas), (names, []))
            group[1].extend(settlement)
        for (_, quotas), (names, settlements) in groups.items():
            self.connection.spawn(self._send(names, quotas, settlements,
                                             quiet.get(names[1], "")))

    def _send(self, names: list[str], quotas: tuple[Quota, ...], settlements: list[Any],
              quiet: str) -> Coroutine[Any, Any, None]:
        """The write of ``settlements`` (5 arguments each) of one key and quotas."""
        refunds = any(settlements[i] == "" for i in range(2, len(settlements), 5))
        return self.connection.write(
            _auto_scripts.SETTLE, [names[1], names[0], names[3], names[4]],
            [len(settlements) // 5, quiet, *settlements, *self.args(quotas)[1:]],
            "refunding" if refunds else "reconciling")

    async def _after(self, write: asyncio.Task[Any], names: list[str],
                     quotas: tuple[Quota, ...], settlement: list[Any], quiet: str) -> None:
        await asyncio.wait((write,))
        await self._send(names, quotas, settlement, quiet)

    def cancelled(self, task: asyncio.Task[Any] | None, names: list[str], member: str) -> None:
        """A reservation was cancelled mid-round-trip: Redis may have admitted it anyway, so
        its log entry goes (its bucket units stay taken: the ``b`` that would settle them
        never came back), after its script has run if it carries settlements (``task``: they
        are never sent twice, and the entry is not removed before it is added)."""
        self.connection.spawn(self._refund(task, names, member))

    async def _refund(self, task: asyncio.Task[Any] | None, names: list[str],
                      member: str) -> None:
        if task is not None:
            await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # its caller has gone: retrieved, nobody else would
        await self.connection.write(_scripts.RECONCILE, names[:2], [member, ""], "refunding")
