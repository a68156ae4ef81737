"""RedisBackend: RateLimit's quota state in Redis, shared by every process using the same prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from ..._core import clock
from ..._core.sweep import SWEEP_AT, sweep
from ..._admission.ratelimit.window import SLACK, Entry, Quota
from . import _bucket_scripts, _charge, _giveback, _scripts
from ._answers import Answers
from ._learning import AutoTicket, RedisLearning
from ._budget import RedisLedger
from ._client import Connection

__all__ = ["RedisBackend"]


class _Seen:
    """What this process learnt about one key at its last reservation: the Redis key names
    (rebuilt from prefix and key when dropped) and the headroom for ``statistics()``, which
    holds until ``stale_at`` (loop time): the longest window, the pause and any provider cap
    have all run out by then, and a missing entry means the same (this process's own view)."""

    __slots__ = ("names", "requests", "tokens", "paused_until", "stale_at")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.requests = self.tokens = 0
        self.paused_until = self.stale_at = 0.0


class _BucketTicket:
    """A reservation in Redis buckets: what ``_bucket_scripts.SETTLE`` needs to settle it."""

    __slots__ = ("quotas", "made", "tokens")

    def __init__(self, quotas: tuple[Quota, ...], made: Any, tokens: int) -> None:
        #: The layer's quotas, which hash made it (``AutoTicket.made_of``), its tokens.
        self.quotas, self.made, self.tokens = quotas, made, tokens


class RedisBackend(Answers):
    """Shared state in Redis: pass it as ``RateLimit(..., backend=RedisBackend(url))``.

    Same semantics as the in-memory backend (under the default ``refill="auto"`` a sliding log
    until a process learns the server's shape, then that shape for every process: ``_learning``;
    ``refill="window"`` the log, ``"continuous"`` one refilling bucket per quota; reservation then
    reconciliation or refund, provider caps, and the Retry-After pause), applied
    atomically by Lua scripts on the server's clock, so every process with the same ``prefix``
    and key shares one quota. The fair order holds within a process (the layer's line); across
    processes admission is first come at the server, not a global queue.

    ``on_error``: ``"local"`` (default) falls back to this process's own in-memory limits while
    Redis is down or slower than ``timeout`` seconds (one warning per outage on the
    ``llmguard.redis`` logger, Redis retried every second); ``"fail"`` raises
    :class:`llmguard.BackendUnavailable`. Reconciliations and refunds are written in the
    background (they run on cleanup paths that must not block); one lost while Redis is down
    leaves the reservation as estimated, which errs on the side of waiting (under the default
    the next reservation of the key carries them: ``_settlements``). What the server said or
    one process learned for all (a shape, a verdict, a 429's lesson and pause, a reading) is
    written again after each timeout until it lands, dated as heard (``aclose()``: once).

    The same object builds the other shared pieces: :class:`RedisConcurrencyLimiter` and
    :class:`RedisStore` take it as their first argument, ``CircuitBreaker(name=...,
    backend=backend)`` shares circuit openings, ``Budget(backend=backend)`` spend, and
    ``Router(backend=backend)`` its deployments' quotas and ``concurrency`` slots.
    ``await backend.aclose()`` at shutdown.

    Memory in this process stays bounded with a key per user or tenant: what it caches per key
    is forgotten once stale (swept whenever the number of keys has doubled, like
    :class:`llmguard.backends.MemoryBackend`), and every key it writes in Redis expires.
    """

    __slots__ = ("connection", "_local", "_seq", "_args", "_seen", "_sweep_at", "_ledger", "_learning")

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "llmguard",
        on_error: str = "local",
        timeout: float = 0.5,
    ) -> None:
        #: The client, the timeout and the on_error policy (shared with limiters and stores).
        self.connection = Connection(url, prefix, on_error, timeout)
        # Import redis-py and make the client now, not in the first reservation: the import
        # takes hundreds of ms on a busy machine and would block the event loop while callers'
        # max_wait clocks run (the first waiters of a process timed out behind it).
        self.connection.redis  # noqa: B018
        #: Used while Redis is unavailable with on_error="local"; also mirrors pauses and caps.
        self._local = _charge.Mirror()
        self._seq = 0
        # One entry per quota tuple, i.e. per RateLimit layer: bounded by the code, not the keys.
        self._args: dict[tuple[Quota, ...], list[Any]] = {}
        self._seen: dict[Hashable, _Seen] = {}
        self._sweep_at = SWEEP_AT
        self._ledger = RedisLedger(self.connection)  # no I/O until a Budget reserves
        #: refill="auto": this process's learner (its mirror is ``_local``) and the shared shape.
        self._learning = RedisLearning(self.connection, self._local)

    @property
    def tracked_keys(self) -> int:
        """Keys with cached state in this process now (stale ones not swept yet included)."""
        return len(self._seen)

    def _key(self, key: Hashable) -> list[str]:
        seen = self._seen.get(key)
        if seen is not None:
            return seen.names
        # {hash tag}: the log and the state land in one slot on Redis Cluster. No key (None) is
        # "{}", a str "s:" and itself, anything else "r:" and its type and repr: None and "",
        # 1 and "1", 7 and "int=7" never share.
        if key is None:
            name = ""
        elif isinstance(key, str):
            name = f"s:{key}"
        else:
            name = f"r:{type(key).__name__}={key!r}"
        tag = f"{self.connection.prefix}:rl:{{{name}}}"
        return [f"{tag}:log", f"{tag}:state", f"{tag}:fence", f"{tag}:shape", f"{tag}:done"]

    def _quota_args(self, quotas: tuple[Quota, ...]) -> list[Any]:
        args = self._args.get(quotas)
        if args is None:
            if any(q.continuous != quotas[0].continuous for q in quotas):
                raise ValueError("RedisBackend needs every quota of a layer to refill the same way")
            args = [max(q.window for q in quotas), SLACK]
            for q in quotas:
                args += [q.limit, q.window, int(q.tokens)]
            self._args[quotas] = args
        return args

    def _settle(self, key: Hashable, ticket: Any, used: int | None) -> bool:
        """Settle a ticket other than a log member (``used`` None: refund); False for one."""
        if isinstance(ticket, Entry):  # admitted locally during an outage
            if used is None:
                self._local.refund(key, ticket)
            else:
                self._local.reconcile(key, ticket, used)
        elif isinstance(ticket, AutoTicket):
            self._learning.settle(key, ticket, used, self._key(key))
        elif not isinstance(ticket, _BucketTicket):
            return False
        elif ticket.made is not None:  # not settled yet
            args = [ticket.made, ticket.tokens, "" if used is None else used,
                    *self._quota_args(ticket.quotas)[2:]]
            ticket.made = None
            self.connection.spawn(self.connection.write(
                _bucket_scripts.SETTLE, self._key(key)[1:], args,
                "refunding" if used is None else "reconciling"))
        return True

    async def reserve(
        self, key: Hashable, quotas: tuple[Quota, ...], tokens: int
    ) -> tuple[float, Any]:
        connection = self.connection
        if connection.on_error == "local" and connection.down():
            return await self._local.reserve(key, quotas, tokens)
        horizon, slack, *triples = self._quota_args(quotas)
        names, marks = self._key(key), connection.marks
        fence = [marks.known(names[2]), marks.proposed()]  # the restart marker (``_fence``)
        self._seq += 1
        member = f"{connection.id}.{self._seq}"
        if quotas[0].learn:
            result = await self._learning.reserve(key, quotas, tokens, names, member, fence)
        elif quotas[0].continuous:
            result = await connection.call(
                _bucket_scripts.RESERVE, names[1:], [tokens, slack, horizon, *fence, *triples],
                "reserving rate-limit room")
        else:
            try:
                result = await connection.call(
                    _scripts.RESERVE, names, [member, tokens, horizon, slack, *fence, *triples],
                    "reserving rate-limit room")
            except BaseException:  # cancelled mid-round-trip: Redis may have admitted it anyway
                self.refund(key, f"{member}:{tokens}")  # (its id is ours: no window-long unit)
                raise
        if result is None:  # on_error="local": this process's own limits for now
            return await self._local.reserve(key, quotas, tokens)
        marks.saw(names[2], result[-1])
        admitted, wait, requests, free_tokens, paused, capped = result[:6]
        self._remember(key, quotas, int(float(requests)), int(float(free_tokens)),
                       float(paused), float(capped))
        if admitted != 1:
            return float(wait), None
        if quotas[0].learn:
            return 0.0, result[6]
        if quotas[0].continuous:
            return 0.0, _BucketTicket(quotas, AutoTicket.made_of(quotas, result[6], result[7]),
                                      tokens)
        return 0.0, f"{member}:{tokens}"

    def _remember(self, key: Hashable, quotas: tuple[Quota, ...], requests: int, tokens: int,
                  paused: float, capped: float) -> None:
        now = asyncio.get_running_loop().time()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self._sweep_at:
                self._sweep_at = sweep(self._seen, lambda seen: seen.stale_at <= now)
            seen = self._seen[key] = _Seen(self._key(key))
        seen.requests, seen.tokens, seen.paused_until = requests, tokens, now + paused
        seen.stale_at = now + max(self._quota_args(quotas)[0], paused, capped)

    def reconcile(self, key: Hashable, ticket: Any, tokens: int) -> None:
        if self._settle(key, ticket, tokens):
            return
        member, _, reserved = ticket.rpartition(":")
        if reserved == str(tokens):  # settled as reserved (refill="auto" settles every one)
            return
        self.connection.spawn(self.connection.write(
            _scripts.RECONCILE, self._key(key)[:2], [ticket, f"{member}:{tokens}"], "reconciling"))

    def refund(self, key: Hashable, ticket: Any) -> None:
        if self._settle(key, ticket, None):
            return
        self.connection.spawn(self.connection.write(
            _scripts.RECONCILE, self._key(key)[:2], [ticket, ""], "refunding"))

    def headroom(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int, int, float]:
        """As of this process's last reservation for ``key`` (reading Redis here would block);
        once that is stale, or before any, this process's own view (its pauses and caps)."""
        seen = self._seen.get(key)
        now = clock.now()
        if seen is None or seen.stale_at <= now:
            return self._local.headroom(key, quotas)
        return seen.requests, seen.tokens, max(0.0, seen.paused_until - now)

    def giveback(self, key: Hashable, verdict: bool, why: str, doubt: bool = False) -> Any:
        """Share whether the server gives unused output back (``key``: the output quotas')."""
        return _giveback.tell(self.connection, self._key(key)[3], verdict, why, doubt)

    def circuit_state(self, name: str, **params: Any) -> Any:
        """The shared state behind ``CircuitBreaker(name=..., backend=self)``."""
        from ._circuit import RedisCircuitState

        return RedisCircuitState(self.connection, name, **params)

    def concurrency_slots(self, name: str, *, lease: float = 10.0) -> Any:
        """The :class:`~llmguard.backends.SharedSlots` of ``name`` (a Router deployment's
        ``concurrency``): a lease per slot, back ``lease`` s after its process died."""
        from ._slots import RedisSlots

        return RedisSlots(self.connection, name, lease)

    def budget_ledger(self) -> RedisLedger:
        """The shared ledger behind ``Budget(..., backend=self)`` (one per backend)."""
        return self._ledger

    async def aclose(self) -> None:
        """Wait for background writes and close the connection pool."""
        await self.connection.aclose()

    def __repr__(self) -> str:
        c = self.connection
        state = "down" if c._outage else "up"
        return (f"<RedisBackend {c.shown_url} prefix={c.prefix!r} on_error={c.on_error!r} "
                f"timeout={c.timeout:g} {state} errors={c.errors}>")
