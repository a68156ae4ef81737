"""AgentPool: spread calls over agents or clients, at most ``per_member`` calls on each at once.

A call borrows a free member, waits first-in first-out when none is free, and gives the member
back on success, error or cancellation. A member that keeps failing (retryable failures in the
sense of :func:`llmguard.classify`, 429s included) gets its own circuit (``llmguard._resilience.circuit_state.CircuitState``):
it is skipped for ``cooldown`` seconds, then one probe call decides whether it comes back.
A streamed answer (a member method that is an async generator, or returns an async iterator)
holds its member until the stream ends: exhausted, closed, failed or abandoned.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from .._core.call import Call
from .._core.check import number, text
from .._core.classify import classify
from .._core.errors import CircuitOpenError
from .._core.layer import invoke
from .._core.public import public
from .._core.stream import Stream
from .._resilience.circuit_state import State
from .member import Member, MemberStats, PoolStats

__all__ = ["AgentPool"]

_STRATEGIES = ("least_busy", "round_robin", "weighted")


@public
class AgentPool:
    """A pool of members (objects with an async ``method``, or coroutine functions).

    ``strategy``: ``"least_busy"`` (fewest calls in progress, then fewest failures, then fewest calls),
    ``"round_robin"``, or ``"weighted"`` (smooth weighted round robin over ``weights``).
    ``pool.<method>(...)`` and ``pool(...)`` call a member; both are guardable async callables
    (``Pipeline.wrap(pool.send_message)``). ``async with pool`` closes members having
    ``aclose()``/``close()``. Give a member its own quota by passing ``pipeline.wrap(fn)``.
    """

    __slots__ = ("_members", "_per_member", "_strategy", "_method", "_waiters", "_rr", "_bound",
                 "_timer")

    def __init__(self, members: Sequence[Any], *, per_member: int = 1, strategy: str = "least_busy",
                 method: str = "send_message", weights: Sequence[float] | None = None,
                 cooldown: float = 30.0) -> None:
        if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
            raise TypeError(f"members must be a list of agents, clients or coroutine functions, "
                            f"got {members!r}")
        members = list(members)
        if not members:
            raise ValueError("members must not be empty: pass at least one agent, client or coroutine function")
        number("per_member", per_member, integer=True, low=1, low_open=False)
        text("method", method, hint="; the members' async method name, e.g. 'send_message'")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}; got {strategy!r}")
        if weights is not None and strategy != "weighted":
            raise ValueError(f"weights only apply to strategy='weighted', got strategy={strategy!r}")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members):
            raise ValueError(f"weights must be one number > 0 per member ({len(members)}), got {weights!r}")
        for i, w in enumerate(weights):
            number("weights", w, hint=f" for members[{i}]")
        number("cooldown", cooldown, unit=" of seconds")
        self._members = [self._member(m, i, method, w, cooldown) for i, (m, w) in enumerate(zip(members, weights))]
        self._per_member, self._strategy, self._method = per_member, strategy, method
        # FIFO of waiting callers; an OrderedDict so a cancelled one leaves in O(1), whether or
        # not _wake already dropped it (deque.remove raised ValueError when it had)
        self._waiters: OrderedDict[asyncio.Future[tuple[Member, object]], None] = OrderedDict()
        self._rr = 0
        self._timer: asyncio.TimerHandle | None = None

        async def bound(*args: Any, **kwargs: Any) -> Any:
            return await self(*args, **kwargs)

        bound.__name__ = bound.__qualname__ = method
        self._bound = bound

    @staticmethod
    def _member(m: Any, i: int, method: str, weight: float, cooldown: float) -> Member:
        fn = getattr(m, method, None)
        if fn is None:
            if not callable(m):
                raise TypeError(f"members[{i}] has no async method {method!r} and is not callable: {m!r}")
            fn = m
        name = getattr(m, "name", None) or getattr(fn, "__qualname__", None) or f"member{i}"
        return Member(m, fn, f"{i}:{name}", float(weight), cooldown)

    def __getattr__(self, name: str) -> Any:
        if name == self._method:
            return self._bound
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Borrow a member, await its method with these arguments, give it back."""
        loop = asyncio.get_running_loop()
        member, ticket = await self._acquire(loop)
        start = loop.time()
        try:
            result = await invoke(Call(member.fn, args, kwargs))
            if isinstance(result, Stream):  # the member serves the stream to its end
                result.defer(lambda error: self._give_back(member, ticket, loop, start, error))
                return result
        except BaseException as exc:
            self._give_back(member, ticket, loop, start, exc)
            raise
        self._give_back(member, ticket, loop, start, None)
        return result

    def _give_back(self, member: Member, ticket: object, loop: asyncio.AbstractEventLoop,
                   start: float, error: BaseException | None) -> None:
        if error is None:
            member.circuit.record(loop.time(), False, ticket)
        elif isinstance(error, Exception):
            member.failures += 1
            # retryable, not unhealthy: a member out of quota (429) is skipped like one failing,
            # while the others serve
            member.circuit.record(loop.time(), classify(error).kind.retryable, ticket)
        else:  # a cancellation (or a consumer closing a stream) says nothing about the member
            member.circuit.cancel(ticket)
        member.calls += 1
        member.latency += loop.time() - start
        member.busy -= 1
        self._wake(loop)

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> tuple[Member, object]:
        if not self._waiters and (picked := self._pick(loop.time())) is not None:
            return picked
        now = loop.time()
        if all(m.circuit.state is State.OPEN and not m.usable(now, self._per_member) and not m.busy
               for m in self._members):
            wait = min(m.circuit.retry_after(now) for m in self._members)
            raise CircuitOpenError(
                f"all {len(self._members)} pool members are cooling down after repeated failures; "
                f"next probe in {wait:.1f} s (lower the load, add members or raise cooldown)",
                retry_after=wait)
        waiter = loop.create_future()
        self._waiters[waiter] = None
        self._wake(loop)  # cooling members may be due for a probe
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: give it back
                member, ticket = waiter.result()
                member.busy -= 1
                member.circuit.cancel(ticket)
                self._wake(loop)
            else:
                self._waiters.pop(waiter, None)
            raise

    def _pick(self, now: float) -> tuple[Member, object] | None:
        """Choose a usable member by strategy and take a slot on it (busy += 1); with the
        ticket its circuit admitted the call under."""
        free = [m for m in self._members if m.usable(now, self._per_member)]
        if not free:
            return None
        if self._strategy == "least_busy":
            member = min(free, key=lambda m: (m.busy, m.failures, m.calls))
        elif self._strategy == "round_robin":
            n = len(self._members)
            order = [self._members[(self._rr + k) % n] for k in range(n)]
            member = next(m for m in order if m in free)
            self._rr = (self._members.index(member) + 1) % n
        else:  # smooth weighted round robin (nginx): even spread in proportion to weight
            for m in free:
                m.current += m.weight
            member = max(free, key=lambda m: m.current)
            member.current -= sum(m.weight for m in free)
        ticket = member.circuit.allow(now)  # takes the probe slot when half-open
        member.busy += 1
        return member, ticket

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand free members to waiters in arrival order; retry when a cooldown ends."""
        waiters = self._waiters
        while waiters:
            waiter = next(iter(waiters))
            if waiter.done():  # cancelled while queued; its caller has not resumed yet
                del waiters[waiter]
                continue
            picked = self._pick(loop.time())
            if picked is None:
                break
            del waiters[waiter]
            waiter.set_result(picked)
        if self._waiters and self._timer is None:
            now = loop.time()
            due = [m.circuit.retry_after(now) for m in self._members if m.circuit.state is State.OPEN]
            if due:
                def fire() -> None:
                    self._timer = None
                    self._wake(loop)

                self._timer = loop.call_later(max(min(due), 0.0), fire)

    def statistics(self) -> PoolStats:
        return PoolStats(tuple(
            MemberStats(m.name, m.busy, m.calls, m.failures, m.circuit.state.value,
                        m.latency / m.calls if m.calls else 0.0)
            for m in self._members), sum(not w.done() for w in self._waiters))

    async def aclose(self) -> None:
        """Close every member that has ``aclose()`` or ``close()`` (awaited when async)."""
        if self._timer is not None:
            self._timer.cancel()
        for m in self._members:
            close = getattr(m.target, "aclose", None) or getattr(m.target, "close", None)
            if callable(close):
                result = close()
                if inspect.isawaitable(result):
                    await result

    async def __aenter__(self) -> AgentPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        busy = ", ".join(f"{m.name}={m.busy}/{self._per_member}" for m in self._members)
        return f"<AgentPool {self._strategy} [{busy}] waiting={len(self._waiters)}>"
