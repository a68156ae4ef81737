"""Moving a reservation to its send time (:mod:`llmguard._admission.ratelimit.move`): the same
state as a refund then a fresh take, for every kind of track, and what uses it (the in-memory
backend; a backend without ``move`` is refunded and reserves anew)."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.ratelimit.backend import MemoryBackend
from llmguard._admission.ratelimit.move import MovesNow, move
from llmguard._admission.ratelimit.window import Quota, Window


#: Slots that hold no state of their own: the probing's scans kept while the change counts
#: they were made at stand (``changed.py``: process-wide counts, which two replays of the same
#: steps, and a move against a refund then a take, bump differently; each scan is redone from
#: the state compared here once a count moved).
UNSTATED = {"scans"}


def snapshot(root: Any) -> Any:
    """Everything ``root`` holds, as plain values: objects by their slots, in a fixed order,
    one seen before by the order it was first seen (two windows built by the same steps give
    equal snapshots, whichever objects they hold)."""
    seen: dict[int, int] = {}

    def walk(obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if id(obj) in seen:
            return ("seen", seen[id(obj)])
        seen[id(obj)] = len(seen)
        if isinstance(obj, (tuple, list, deque)):
            return tuple(walk(item) for item in obj)
        if isinstance(obj, dict):
            return tuple((walk(key), walk(value)) for key, value in obj.items())
        if callable(obj):
            return type(obj).__name__
        slots = [name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())
                 if hasattr(obj, name) and name not in UNSTATED]
        if not slots:
            return repr(obj)
        return (type(obj).__name__, *((name, walk(getattr(obj, name))) for name in slots))

    return walk(root)


QUOTAS = {
    "auto": (Quota(5, 10.0, False, learn=True, margin=0.5),
             Quota(400, 10.0, True, learn=True, margin=0.5)),
    "window": (Quota(5, 10.0, False), Quota(400, 10.0, True)),
    "continuous": (Quota(5, 10.0, False, continuous=True), Quota(400, 10.0, True, continuous=True)),
    "mixed": (Quota(5, 10.0, False, learn=True, margin=0.5), Quota(300, 10.0, True, continuous=True)),
}

step = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 6.0)),
    st.tuples(st.just("take"), st.integers(0, 150)),
    st.tuples(st.just("reconcile"), st.integers(0, 30), st.integers(0, 200)),
    st.tuples(st.just("refund"), st.integers(0, 30)),
    st.tuples(st.just("pause"), st.floats(0.0, 3.0)),
    st.tuples(st.just("cap"), st.booleans(), st.integers(0, 300), st.floats(0.5, 20.0)),
)


def replay(kind: str, steps: list[tuple[Any, ...]]) -> tuple[Window, list[Any], float]:
    window = Window(QUOTAS[kind])
    entries: list[Any] = []
    now = 0.0
    for what, *args in steps:
        if what == "advance":
            now += args[0]
        elif what == "take":
            entry = window.take(now, args[0])
            if entry is not None:
                entries.append(entry)
        elif what == "reconcile" and entries:
            window.adjust(now, entries[args[0] % len(entries)], args[1])
        elif what == "refund" and entries:
            window.adjust(now, entries[args[0] % len(entries)], 0, live=0)
        elif what == "pause":
            window.paused_until = max(window.paused_until, now + args[0])
        elif what == "cap":
            window.cap(now, args[0], args[1], args[2])
    return window, entries, now


@settings(max_examples=300, deadline=None)
@example("auto", [("take", 0), ("advance", 4.0), ("advance", 6.0), ("take", 41), ("take", 68),
                  ("take", 0), ("take", 14), ("reconcile", 13, 84), ("take", 150)], 0, 0.0, 0)
@given(st.sampled_from(sorted(QUOTAS)), st.lists(step, max_size=40), st.integers(0, 30),
       st.floats(0.0, 8.0), st.integers(0, 150))
def test_a_move_is_a_refund_then_a_take(kind, steps, which, later, tokens) -> None:
    """Property: ``move(window, now, entry, tokens)`` leaves the window (logs, buckets, counts,
    readings, the entries) exactly as ``adjust(now, entry, 0, live=0)`` then ``take(now,
    tokens)`` leave it, and admits (or not) the same call, whatever came before: pauses, caps,
    reconciliations, refunds, settled or refunded entries moved again."""
    moved, entries, now = replay(kind, steps)
    taken, twins, _ = replay(kind, steps)
    if not entries:
        return
    now += later
    index = which % len(entries)
    assert snapshot(moved) == snapshot(taken)
    ticket = move(moved, now, entries[index], tokens)
    twin = twins[index]
    taken.adjust(now, twin, 0, live=0)
    again = taken.take(now, tokens)
    assert (ticket is None) == (again is None)
    assert snapshot(moved) == snapshot(taken)
    assert snapshot(entries) == snapshot(twins)


async def test_the_memory_backend_moves_and_the_line_uses_it() -> None:
    """The in-memory backend is :class:`MovesNow`: a call queued in a ConcurrencyLimit below is
    counted from when it leaves the queue with one ``move``, never a refund and a take (the
    quota too tight to leave a call's reservation to when it leaves the queue: ``held.defer``);
    a backend without ``move`` (a subclass hiding it) is refunded and takes anew, with the same
    counts."""
    assert isinstance(MemoryBackend(), MovesNow)
    calls: list[str] = []

    class Counting(MemoryBackend):
        def move(self, *args: Any) -> Any:
            calls.append("move")
            return super().move(*args)

        def refund(self, *args: Any) -> None:
            calls.append("refund")
            super().refund(*args)

    async def provider(prompt: str) -> str:
        await asyncio.sleep(1)
        return prompt

    layer = lg.RateLimit(rpm=3, backend=Counting())
    guarded = lg.guard(layer, lg.ConcurrencyLimit(1))(provider)
    await asyncio.gather(*(guarded(f"q{i}") for i in range(3)))
    assert calls == ["move", "move"]  # the second and third waited for the slot
    stats = layer.statistics()
    assert stats.requests_available == 0 and stats.in_flight == 0


class MovingLog:
    """A RateLimitBackend that is MovesNow, from their docstrings: one log of admission times
    per key, requests only; ``move`` refunds, then takes now or returns None."""

    def __init__(self) -> None:
        self.logs: dict[Hashable, dict[int, float]] = {}
        self.tickets = itertools.count(1)
        self.moves = 0

    def _take(self, key: Hashable, quotas: Any) -> tuple[float, Any]:
        now = asyncio.get_running_loop().time()
        log = self.logs.setdefault(key, {})
        wait = 0.0
        for quota in quotas:
            inside = sorted(t for t in log.values() if t > now - quota.window)
            if len(inside) >= quota.limit:
                wait = max(wait, inside[len(inside) - quota.limit] + quota.window - now + 1e-3)
        if wait > 0:
            return wait, None
        ticket = next(self.tickets)
        log[ticket] = now
        return 0.0, ticket

    async def reserve(self, key: Hashable, quotas: Any, tokens: int) -> tuple[float, Any]:
        return self._take(key, quotas)

    def move(self, key: Hashable, quotas: Any, ticket: Any, tokens: int) -> Any:
        self.moves += 1
        self.refund(key, ticket)
        return self._take(key, quotas)[1]

    def reconcile(self, key: Hashable, ticket: Any, tokens: int) -> None:
        pass

    def refund(self, key: Hashable, ticket: Any) -> None:
        self.logs[key].pop(ticket, None)

    def pause(self, key: Hashable, quotas: Any, seconds: float) -> None:
        pass

    def cap(self, key: Hashable, quotas: Any, tokens: bool, remaining: int,
            reset: float) -> None:
        pass

    def headroom(self, key: Hashable, quotas: Any) -> tuple[int, int, float]:
        return 0, 0, 0.0


async def test_a_backend_that_moves_counts_each_call_from_its_send() -> None:
    """A backend written from the MovesNow docstring: RateLimit(rpm=3) over ConcurrencyLimit(1)
    moves each call that waited for the slot to when it left the queue, so its log holds the
    arrival times and no 60 s window at the provider holds more than 3."""
    backend, arrivals = MovingLog(), []

    async def provider(latency: float) -> None:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(latency)

    guarded = lg.guard(lg.RateLimit(rpm=3, margin=0, backend=backend),
                       lg.ConcurrencyLimit(1))(provider)
    first = [asyncio.create_task(guarded(latency)) for latency in (50, 1, 1)]
    await asyncio.sleep(60)
    await asyncio.gather(*first, *(guarded(1) for _ in range(3)))
    assert arrivals == pytest.approx([0, 50, 51, 60, 110, 111], abs=0.01)
    assert sorted(backend.logs[None].values()) == pytest.approx(arrivals, abs=0.01)
    assert backend.moves == 2  # the two queued behind the 50 s call; the rest waited above
