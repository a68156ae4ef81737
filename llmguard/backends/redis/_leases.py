"""The leases one RedisConcurrencyLimiter holds, and what Redis may know of each.

A lease id is chosen here before Redis is asked, so every permit has one, even a permit granted
locally during an outage. Each id is in one of three states:

- ``LOCAL``: Redis was never asked (``on_error="local"`` while Redis is down);
- ``UNSURE``: a command that may create it (ACQUIRE, RENEW) got no answer, so it may still run
  late (Redis was slow, or the caller was cancelled while waiting for the answer);
- ``LIVE``: Redis answered that it holds it.

One task per limiter renews every held lease together, every third of a lease (sooner while
one is not LIVE or a release is pending). A renewal also puts back the leases Redis lost (a
restart) and registers those granted locally during an outage, so once Redis answers again it
counts every call actually running. Releasing an id that a late command may still create leaves
a tombstone that makes that command a no-op; a release Redis did not confirm is retried until it
does. So a lease outlives its call only while Redis cannot be reached.
"""

from __future__ import annotations

import asyncio

from . import _client, _scripts
from ._client import Connection, logger

__all__ = ["LIVE", "LOCAL", "MAX_PENDING", "UNSURE", "Leases"]

LOCAL, UNSURE, LIVE = "local", "unsure", "live"

#: Releases kept for retrying while Redis cannot be reached; beyond this the oldest are dropped
#: (their leases expire by themselves within a lease).
MAX_PENDING = 10_000


class Leases:
    """Held lease ids, their Redis state, the renewal task and the releases still to confirm."""

    __slots__ = ("connection", "keys", "lease", "state", "held", "pending", "returned",
                 "_renewing", "_task", "_seq")

    def __init__(self, connection: Connection, key: str, lease: float) -> None:
        self.connection = connection
        #: The leases ZSET, the restart fence HASH and the tombstone ZSET (one hash slot).
        self.keys = [key, f"{key}:run", f"{key}:gone"]
        self.lease = lease
        #: Ids held or being acquired, each with its state (LOCAL, UNSURE, LIVE).
        self.state: dict[str, str] = {}
        #: Ids held by this process, in the order acquired.
        self.held: list[str] = []
        #: Ids whose release Redis has not confirmed yet (an ordered set), retried by the task.
        self.pending: dict[str, None] = {}
        #: Leases renewal put back after Redis lost them, or registered after an outage.
        self.returned = 0
        self._renewing: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    def new_id(self) -> str:
        """A lease id unique across processes and limiters of this connection."""
        self._seq += 1
        return f"{self.connection.id}.{self._seq}"

    async def try_acquire(self, lease: str, limit: int) -> tuple[bool, float] | None:
        """One ACQUIRE: (granted, seconds worth waiting), or None when Redis failed and
        ``on_error="local"`` (the id stays UNSURE). Raises what ``Connection.call`` raises; the
        caller then calls :meth:`abandon`."""
        self.state[lease] = UNSURE
        marks = self.connection.marks
        result = await self.connection.call(
            _scripts.ACQUIRE, self.keys,
            [lease, limit, self.lease, marks.known(self.keys[1]), marks.proposed()],
            "acquiring a concurrency lease",
        )
        if result is None:
            return None
        marks.saw(self.keys[1], result[2])
        if result[0] == 1:
            self.state[lease] = LIVE
        else:
            del self.state[lease]  # answered: not created
        return result[0] == 1, float(result[1])

    def hold(self, lease: str) -> None:
        """Record a granted permit (LOCAL unless Redis was asked) and keep it renewed."""
        self.state.setdefault(lease, LOCAL)
        self.held.append(lease)
        self._start()

    def abandon(self, lease: str) -> None:
        """An acquisition that failed or was cancelled: release its id if Redis may create it."""
        if self.state.pop(lease, None) == UNSURE:
            self._forget([lease], tombstone=True)

    def release(self) -> None:
        """Give back the latest permit (synchronous; Redis is written in the background)."""
        lease = self.held.pop()
        state = self.state.pop(lease)
        if state == UNSURE or lease in self._renewing:
            self._forget([lease], tombstone=True)
        elif state == LIVE:
            self._forget([lease], tombstone=False)

    def _forget(self, ids: list[str], *, tombstone: bool) -> None:
        self.connection.spawn(self._release(ids, tombstone))

    async def _release(self, ids: list[str], tombstone: bool) -> None:
        try:
            done = await self.connection.call(
                _scripts.RELEASE, [self.keys[0], self.keys[2]],
                [self.lease, "1" if tombstone else "0", *ids], "releasing concurrency leases",
            ) is not None
        except Exception:  # unavailable (on_error="fail") or refused: no caller to fail here
            done = False
        if not done:
            self.pending.update(dict.fromkeys(ids))
            while len(self.pending) > MAX_PENDING:
                del self.pending[next(iter(self.pending))]
            self._start()

    async def _renew(self) -> None:
        ids = list(self.held)
        self._renewing.update(ids)
        marks = self.connection.marks
        try:
            result = await self.connection.call(
                _scripts.RENEW, self.keys,
                [self.lease, marks.known(self.keys[1]), marks.proposed(), *ids],
                "renewing concurrency leases",
            )
            back = None if result is None else result[0]
            if result is not None:
                marks.saw(self.keys[1], result[1])
        except Exception:  # unavailable (on_error="fail") or refused: retried, held as unsure
            back = None
        finally:
            self._renewing.difference_update(ids)
        for lease in ids:
            if lease in self.state:  # still held
                self.state[lease] = UNSURE if back is None else LIVE
        if back:
            self.returned += back
            logger.info("llmguard: %d concurrency leases of running calls were missing in Redis "
                        "(a restart, or granted locally during an outage); registered again", back)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._maintain())
            loops = self.connection.loops  # aclose() cancels it
            loops.add(self._task)
            self._task.add_done_callback(loops.discard)

    async def _maintain(self) -> None:
        """Retry pending releases and renew held leases until there are neither."""
        try:
            while self.held or self.pending:
                settled = not self.pending and all(self.state[i] == LIVE for i in self.held)
                interval = self.lease / 3
                await asyncio.sleep(interval if settled else min(interval, _client.RETRY_INTERVAL))
                if self.pending:
                    ids = list(self.pending)
                    self.pending.clear()
                    await self._release(ids, True)  # puts them back on failure
                if self.held:
                    await self._renew()
        finally:
            if self._task is asyncio.current_task():
                self._task = None
