"""Shared circuit state: one process seeing the provider down opens the circuit for all.

Each process keeps its own :class:`CircuitState` (the breaker's decisions stay synchronous and
local: no Redis round trip per call). What is shared is the verdict: when a process opens its
circuit it writes ``<prefix>:circuit:{name}`` with a TTL of ``open_for`` (server clock), and a
background task per state polls that key; a closed process that finds it opens too, for the
time left. Probes stay per process (each probes once its own open period ends), so a recovering
provider sees at most ``half_open_calls`` probes per process. The poller holds the state only
weakly, so a breaker its owner drops (one per model or tenant, say) stops polling and is freed
instead of piling up tasks until ``aclose()``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ..._resilience.circuit_state import CircuitState, State
from ._client import Connection

__all__ = ["RedisCircuitState"]


class RedisCircuitState:
    """A :class:`~llmguard.backends.CircuitStore` whose openings are shared through Redis (see the module
    doc). It wraps an in-process :class:`CircuitState` and publishes each opening it makes."""

    __slots__ = ("connection", "key", "poll", "local", "_poller", "__weakref__")

    def __init__(self, connection: Connection, name: str, **params: Any) -> None:
        #: The per-process state machine that decides every call.
        self.local = CircuitState(**params)
        self.connection = connection
        self.key = f"{connection.prefix}:circuit:{{{name}}}"
        #: Seconds between reads of the shared verdict (how late another process follows).
        self.poll = min(0.5, self.local.open_for / 4)
        self._poller: asyncio.Task[None] | None = None

    # The CircuitStore attributes, read through to the local state.
    state = property(lambda self: self.local.state)
    failure_ratio = property(lambda self: self.local.failure_ratio)
    open_for = property(lambda self: self.local.open_for)
    opened = property(lambda self: self.local.opened)
    rejected = property(lambda self: self.local.rejected)

    def allow(self, now: float) -> object | None:
        if self._poller is None:  # first call, inside the loop: start following the others
            loops = self.connection.loops
            poller = self._poller = asyncio.get_running_loop().create_task(
                _follow(weakref.ref(self), self.poll))
            loops.add(poller)
            poller.add_done_callback(loops.discard)
        return self.local.allow(now)

    def record(self, now: float, failed: bool, ticket: object = None) -> None:
        opened = self.local.opened
        self.local.record(now, failed, ticket)
        if self.local.opened != opened:  # this process opened it: tell the others
            self.connection.spawn(self._publish())

    def cancel(self, ticket: object = None) -> None:
        self.local.cancel(ticket)

    def retry_after(self, now: float) -> float:
        return self.local.retry_after(now)

    def counts(self, now: float) -> tuple[int, int]:
        return self.local.counts(now)

    def force_open(self, now: float) -> None:
        self.local.force_open(now)
        self.connection.spawn(self._publish())

    def force_close(self) -> None:
        self.local.force_close()

    async def _publish(self) -> None:
        redis = self.connection.redis
        ms = max(1, int(self.local.open_for * 1000))
        await self.connection.run(lambda: redis.set(self.key, "open", px=ms), "opening the circuit")

    async def _check(self) -> None:
        """Open if closed here and another process has opened the shared circuit."""
        connection = self.connection
        if self.state is not State.CLOSED or (connection.on_error == "local" and
                                              connection.down()):
            return
        try:
            left = await connection.run(lambda: connection.redis.pttl(self.key),
                                        "reading the shared circuit")
        except Exception:  # on_error="fail": a closed circuit stays local, never crashes
            return
        if left is not None and left > 0 and self.state is State.CLOSED:
            # Open for the time the opener has left, without re-publishing it.
            now = asyncio.get_running_loop().time()
            self.local.force_open(now - self.local.open_for + left / 1000)

    def __repr__(self) -> str:
        return f"<RedisCircuitState {self.key} {self.local!r}>"


async def _follow(ref: weakref.ref[RedisCircuitState], poll: float) -> None:
    """Check the shared verdict every ``poll`` seconds while the state is alive (held strongly
    only during a check)."""
    while True:
        await asyncio.sleep(poll)
        state = ref()
        if state is None:
            return
        await state._check()
        del state
