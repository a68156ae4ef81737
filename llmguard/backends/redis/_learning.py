"""The default ``refill="auto"`` in Redis: every process paces a key like the server's limiter
once any process has learned its shape.

Each process learns as in memory: its admissions are mirrored in a local
:class:`~llmguard._admission.ratelimit.window.Window` (the ``on_error="local"`` fallback's), which
reads the headers and 429s of its own answers (:mod:`llmguard._admission.ratelimit.learn`). What
it learns (a token bucket, a fixed window and its boundary, the effective limits) is published in
Redis (``_learned_scripts.PUBLISH``), and every reservation of every process for that key is then
admitted by that shape's pacer, atomically on the server's clock (``_auto_scripts.RESERVE``); a
process adopts a shape published by another at its next reservation. A supposed boundary is
probed by one request for all processes, and so is a server that says nothing (``_silent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from ..._admission.ratelimit import shared
from ..._admission.ratelimit.backend import MemoryBackend
from ..._admission.ratelimit.log import Entry
from ..._admission.ratelimit.window import SLACK, Quota
from ..._core import clock
from . import _auto_scripts, _charge, _giveback, _learned_scripts, _peek, _refused_scripts
from . import _scripts, _silent
from ._auto_ticket import AutoTicket
from ._probe_scripts import POLL
from ._client import Connection
from ._settlements import Settlements

__all__ = ["POLL", "AutoTicket", "RedisLearning"]


class RedisLearning:
    """The learning half of a :class:`~llmguard.backends.redis.RedisBackend`."""

    __slots__ = ("connection", "local", "settlements", "_args", "_known", "_pending", "_told")

    def __init__(self, connection: Connection, local: MemoryBackend) -> None:
        self.connection, self.local = connection, local
        self._args: dict[tuple[Quota, ...], list[Any]] = {}
        #: Per key: the version of the shared shape last seen, and that shape.
        self._known: dict[Hashable, tuple[int, shared.Learned | None]] = {}
        #: Per key: what this process learned, to publish before its next reservation (the
        #: layer wakes its line after every reading: that reservation follows at once).
        self._pending: dict[Hashable, shared.Learned] = {}
        #: Per key: the token charge this process last shared (``charge.Charge.shared``).
        self._told: dict[Hashable, str] = {}
        #: Settlements not sent yet: the next reservation of their key carries them.
        self.settlements = Settlements(connection, self.args)

    def args(self, quotas: tuple[Quota, ...]) -> list[Any]:
        """Horizon (the log's span: longest window plus margin), then limit/window/is_tokens/
        learns/margin per quota."""
        args = self._args.get(quotas)
        if args is None:
            served = max(q.window - q.margin for q in quotas)
            args = [max(q.window + q.margin for q in quotas)]
            for q in quotas:
                learns = abs(q.window - q.margin - served) < 1e-9
                args += [q.limit, q.window, int(q.tokens), int(learns), q.margin]
            self._args[quotas] = args
        return args

    async def reserve(self, key: Hashable, quotas: tuple[Quota, ...], tokens: int,
                      names: list[str], member: str, fence: list[str]) -> Any:
        """One reservation: the Redis result (None when Redis is out and on_error is local)
        with an :class:`AutoTicket` in place of ``b`` when admitted."""
        window = self.local.window(key, quotas)
        loop = asyncio.get_running_loop()
        # taken first: during a publication they would go on their own, overtaken by it (#30)
        carried = self.settlements.take(names, quotas)
        publication = self._pending.pop(key, None)
        if publication is not None:  # before this reservation: it is to be paced by it
            published = None
            try:
                published = await _learned_scripts.publish(
                    self.connection, names, publication, shared.flip_of(window, loop.time()))
            finally:  # cancelled, refused or timed out (a slow Redis; lost, no other process
                if published is None:  # was paced by it): the next reservation publishes it
                    self._pending.setdefault(key, publication)
                    self.settlements.untake(names, quotas, carried)
            if published is None:  # (on_error="local")
                return None
        estimate, charge, told, bare = tokens, window.charge, "", ""
        if charge is not None:  # reserve what the server is believed to count (``_charge``)
            member = _charge.estimated(member, estimate)
            tokens, bare = charge.units(estimate), str(estimate)
            if charge.heard and (mine := charge.shared()) != self._told.get(key):
                told = mine  # the calibration this process read, for every process
        probe = shared.probe_due(window, loop.time(), tokens)
        horizon, *per_quota = self.args(quotas)
        call = self.connection.call(
            _auto_scripts.RESERVE, [names[1], names[0], names[2], names[3], names[4]],
            [member, tokens, horizon, SLACK, *fence, probe, len(carried) // 5, told,
             *_peek.learning(window, self.connection.id + "."), bare, *carried, *per_quota],
            "reserving rate-limit room")
        task = None
        try:
            if carried:  # settlements go once, whether this caller waits for them or not
                task = loop.create_task(call)
                result = await asyncio.shield(task)
            else:
                result = await call
        except BaseException:  # cancelled mid-round-trip: Redis may have admitted it anyway
            self.settlements.cancelled(task, names, f"{member}:{tokens}")
            raise
        if result is None:
            return None
        now = loop.time()
        _peek.read(window, now, result[14])  # before what it admits: their admissions came first
        self._adopt(key, window, now, [*result[7:13], result[17]])
        if told:
            self._told[key] = told
        if charge is not None and result[13]:
            charge.follow(window, now, result[13])
        result = list(result)
        admitted = result[0]
        if admitted in (1, 2, 3, 4, 5, 6):
            entry = window.add(now, tokens, estimate)
            if admitted == 2:
                window.shape.probe = entry
            result[0] = 1
            result[6] = AutoTicket(f"{member}:{tokens}", result[6], tokens, entry, quotas,
                                   _giveback.parse(result[15], result[16]), result[18])
            result[6].silent = admitted if admitted > 2 else 0  # a silent server's probe
            return [*result[:7], result[-1]]
        if admitted == -1:  # another process sends the probe: its answer is shared
            window.shape.probes = 0
        wait = float(result[1])
        due = None if probe else shared.probe_wait(window, now, tokens)  # (asked: Redis said)
        if due is not None:
            wait = min(wait, due + SLACK)
        if result[7] in (b"unknown", "unknown") and window.shape.candidate is not None:
            # a supposed boundary is being probed, maybe by another process: the shape may
            # be learned any time now (and the pause a 429 asked for end at the boundary)
            wait = min(wait, POLL)
        result[0], result[1] = 0, repr(wait)
        return [*result[:7], result[-1]]

    def _adopt(self, key: Hashable, window: Any, now: float, got: list[Any]) -> None:
        version = int(got[4])  # first: on most reservations nothing new was published
        seen = self._known.get(key)
        if version <= (0 if seen is None else seen[0]):  # 0: no shape hash, nothing learned
            return
        kind, epoch, lims, why, late, doubt = (x.decode() if isinstance(x, bytes) else str(x)
                                               for x in (*got[:4], *got[5:]))
        if kind == "unknown" and not lims:
            return
        remote: shared.Learned = (kind, now + float(epoch) if epoch else None,
                                  tuple(int(x) for x in lims.split(",")) if lims else (), why,
                                  late == "1", float(doubt) if doubt else None)
        self._known[key] = (version, remote)
        if window.shape is not None and not shared.same(shared.learned(window), remote,
                                                        window.shape.window):
            shared.adopt(window, now, remote)

    def _publish(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """Share what this process's window learned, if it differs from what is shared."""
        window = self.local.window(key, quotas)
        mine = shared.learned(window)
        seen = self._known.get(key, (0, None))
        if mine is None or shared.same(mine, seen[1], window.shape.window):
            return
        self._known[key] = (seen[0], mine)  # replies older than this publication are ignored
        self._pending[key] = mine

    def settle(self, key: Hashable, ticket: AutoTicket, tokens: int | None,
               names: list[str]) -> None:
        """Reconcile to ``tokens`` (None: refund) in Redis and in the local mirror."""
        if ticket.made is None:  # settled already
            return
        if ticket.silent:  # a silent server's probe (or its charge's): for every process
            _charge.settled(self.connection, ticket, tokens, names, self.args(ticket.quotas)[1:])
        owner = ticket.entry.owner  # its window, until settled there
        quiet = "" if owner is None else _peek.quiet(owner)  # (its end kept: ``_silent``)
        if tokens is None:
            self.local.refund(key, ticket.entry)
        else:  # what the server counts of it (``charge.Charge.settled``; else the usage)
            self.local.reconcile(key, ticket.entry, tokens)
            tokens = ticket.entry.tokens
        member = ticket.member.rpartition(":")[0]
        new = "" if tokens is None else f"{member}:{tokens}"
        self.settlements.add(names, ticket.quotas, [
            ticket.made, ticket.member, new, ticket.tokens, "" if tokens is None else tokens],
            quiet, ticket.refusing)
        ticket.made = None

    def observe(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
                reset: float | None, ticket: Any, limit: int | None, names: list[str],
                as_of_now: bool = False) -> None:
        """A header reading: learned from in the local window, the shape shared if it changed,
        and the reading applied in Redis (``_learned_scripts.READING``; as of now without a
        member)."""
        entry, window = _entry(ticket), self.local.window(key, quotas)
        was = shared.flip_of(window, 0.0)
        self.local.observe(key, quotas, tokens, remaining, reset, ticket=entry, limit=limit,
                           as_of_now=as_of_now)
        flip = "f" if shared.flip_of(window, 0.0) != was else ""  # it showed a new window
        # the shape it was read under here (learned from it, maybe): its publication, which
        # may land after it, drops caps read under another shape only, as in memory
        kind = "" if window.shape is None else window.shape.kind
        under = {"fixed": "F", "bucket": "B"}.get(kind, "")
        self._publish(key, quotas)
        member = ticket.member if isinstance(ticket, AutoTicket) and not as_of_now else ""
        head = [f"{int(tokens)}{flip}{under}", remaining, "" if reset is None else reset, member]
        self.connection.keep(_learned_scripts.READING, [names[1], names[0], names[3]],
                             _learned_scripts.dated(head, self.args(quotas)),
                             "recording provider headers")

    def spent(self, key: Hashable, quotas: tuple[Quota, ...], names: list[str]) -> None:
        """Every quota of ``key`` used up now, in this process's mirror and in Redis for every
        process (``_learned_scripts.SPENT``: the shared buckets drained, the windows capped)."""
        self.local.spent(key, quotas)
        self.connection.keep(_learned_scripts.SPENT, [names[1], names[3]],
                             _learned_scripts.dated([], self.args(quotas)),
                             "counting the quotas as spent")

    def refused(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float, ticket: Any,
                names: list[str], named: Any = None) -> None:
        """A 429: learned from locally (a fixed window's boundary to resume at), the pause
        it leads to set in Redis, and the effective limit learned from every process's
        requests in the window (``_refused_scripts.REFUSED``)."""
        entry, window = _entry(ticket), self.local.window(key, quotas)
        flags = "p" * bool(getattr(ticket, "silent", 0)) + "q" * bool(window.shape.quiet)
        now = clock.now()
        limits, why = [track.limit for track in window.tracks], window.shape.limits
        # a 429 on tokens before any reading: the charge (``_charge``), not a token limit
        charged = window.charge is not None and not window.charge.heard
        if not (isinstance(ticket, AutoTicket) and _charge.refused(
                self.connection, window, ticket, names, self.args(quotas)[1:])):
            _silent.refused(self.connection, window, now, ticket, names)
        with _charge.alone(window, not isinstance(ticket, AutoTicket)):  # (an outage's)
            self.local.refused(key, quotas, seconds, ticket=entry, named=named)
        if isinstance(ticket, AutoTicket) and getattr(named, "limit", None) is None:
            # this process saw its own requests only: the limit comes from every process's
            # (REFUSED), unless the 429 said it
            window.shape.limits = why
            for track, limit in zip(window.tracks, limits):
                if track.limit != limit:
                    track.set_limit(now, limit)
        self._publish(key, quotas)
        until = now + max(0.0, min(seconds, window.paused_until - now))  # (what is left of it
        self.connection.keep(_scripts.PAUSE, names[1:2],  # at each attempt, None once over)
                             lambda: [until - clock.now()] if until > clock.now() else None,
                             "pausing after a 429")
        if isinstance(ticket, AutoTicket):  # the limit every process's requests show
            ticket.refusing = _refused_scripts.learn(
                self.connection, ticket.member, names, self.args(quotas)[1:], named, charged,
                ("" if window.shape.assumed else "1") + flags)


def _entry(ticket: Any) -> Entry | None:
    """The local entry a ticket's answer is read against (a local ticket of an outage: itself)."""
    if isinstance(ticket, AutoTicket):
        return ticket.entry
    return ticket if isinstance(ticket, Entry) else None
