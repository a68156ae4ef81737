"""A pool of agents or clients: borrow a free member per call, fairly, and give it back always."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._classify import classify
from ._concurrency import ConcurrencyLimiter

__all__ = ["AgentPool", "MemberStats", "PoolStats"]

STRATEGIES = ("least_busy", "round_robin", "weighted")


@dataclass(frozen=True, slots=True)
class MemberStats:
    name: str
    busy: int
    calls: int
    failures: int
    cooling: bool


@dataclass(frozen=True, slots=True)
class PoolStats:
    members: tuple[MemberStats, ...]
    in_flight: int
    waiting: int


class _Member:
    __slots__ = ("obj", "fn", "name", "weight", "busy", "calls", "failures", "streak",
                 "cooled_until")

    def __init__(self, obj: Any, method: str, weight: float, index: int) -> None:
        fn = obj if inspect.iscoroutinefunction(obj) else getattr(obj, method, None)
        if fn is None or not callable(fn):
            raise TypeError(f"pool member {obj!r} has no async method {method!r}; pass objects "
                            f"with `async def {method}(...)` or async functions")
        self.obj, self.fn, self.weight = obj, fn, weight
        label = getattr(obj, "name", None) or getattr(obj, "__qualname__", type(obj).__name__)
        self.name = f"{index}:{label}"
        self.busy = self.calls = self.failures = self.streak = 0
        self.cooled_until = 0.0


class AgentPool:
    """Spread calls over several agents or clients, at most ``per_member`` at once on each.

    ``members`` are objects with an async ``method`` (``send_message`` by default) or async
    functions, each optionally guarded by its own pipeline (per-API-key quotas). A call borrows a
    free member, chosen by ``strategy`` (``least_busy``, ``round_robin`` or ``weighted`` with
    ``weights``); when none is free it waits in FIFO order. The member is given back on success,
    error and cancellation alike. A member whose last ``cooldown_after`` calls failed with
    provider-health errors sits out ``cooldown`` seconds; its next call after that is the probe.

    ``pool.<method>(...)`` (e.g. ``pool.send_message``) is itself an async callable that a
    pipeline can guard; ``async with pool:`` closes members that have ``aclose``/``close``.
    """

    def __init__(
        self,
        members: Sequence[Any],
        *,
        per_member: int = 1,
        strategy: str = "least_busy",
        method: str = "send_message",
        weights: Sequence[float] | None = None,
        cooldown_after: int = 3,
        cooldown: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if not members:
            raise ValueError("members is empty: an AgentPool needs at least one agent or client")
        if isinstance(per_member, bool) or not isinstance(per_member, int) or per_member < 1:
            raise ValueError(f"per_member must be an integer >= 1, got {per_member!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if weights is not None and (len(weights) != len(members) or any(w <= 0 for w in weights)):
            raise ValueError("weights must give one positive number per member")
        if not method.isidentifier():
            raise ValueError(f"method must be a method name, got {method!r}")
        self._members = [_Member(m, method, w, i) for i, (m, w) in
                         enumerate(zip(members, weights or [1.0] * len(members)))]
        self.per_member, self.strategy = per_member, strategy
        self.cooldown_after, self.cooldown = cooldown_after, cooldown
        self._limiter = ConcurrencyLimiter(per_member * len(members))
        self._next = 0
        self._rng = random.Random(seed)
        setattr(self, method, self.call)  # pool.send_message(...) is the pool's entry point

    def _choose(self, now: float) -> _Member:
        free = [m for m in self._members if m.busy < self.per_member]
        healthy = [m for m in free if m.cooled_until <= now]
        if not healthy:  # everyone free is cooling down: probe the one that cools soonest
            return min(free, key=lambda m: m.cooled_until)
        if self.strategy == "least_busy":
            return min(healthy, key=lambda m: (m.busy, m.calls))
        if self.strategy == "weighted":
            return self._rng.choices(healthy, [m.weight for m in healthy])[0]
        n = len(self._members)
        for step in range(n):
            member = self._members[(self._next + step) % n]
            if member in healthy:
                self._next = (self._next + step + 1) % n
                return member
        raise AssertionError("unreachable: healthy is not empty")

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        """Run one call on a borrowed member."""
        loop = asyncio.get_running_loop()
        await self._limiter.acquire()
        member = self._choose(loop.time())
        member.busy += 1
        member.calls += 1
        try:
            result = await member.fn(*args, **kwargs)
        except Exception as exc:
            if classify(exc).kind.unhealthy:
                member.failures += 1
                member.streak += 1
                if member.streak >= self.cooldown_after:
                    member.cooled_until = loop.time() + self.cooldown
            raise
        else:
            member.streak = 0
            return result
        finally:
            member.busy -= 1
            self._limiter.release()

    def statistics(self) -> PoolStats:
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            now = 0.0
        members = tuple(MemberStats(m.name, m.busy, m.calls, m.failures, m.cooled_until > now)
                        for m in self._members)
        return PoolStats(members, self._limiter.in_flight, self._limiter.waiting)

    async def aclose(self) -> None:
        """Close every member that has ``aclose()`` or ``close()``."""
        for member in self._members:
            close: Callable[[], Any] | None = getattr(member.obj, "aclose", None) or getattr(
                member.obj, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result

    async def __aenter__(self) -> AgentPool:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        busy = ", ".join(f"{m.name}:{m.busy}" for m in self._members)
        return f"<AgentPool {self.strategy} [{busy}] waiting={self._limiter.waiting}>"
