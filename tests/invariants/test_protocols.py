"""Seams a user or backend may implement, written here from their docstrings alone.

``Limiter`` and ``CircuitStore`` have theirs in tests/admission/test_concurrency.py and
tests/resilience/test_resilience_layers.py; these are the cache store and the rate-limit backend.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable
from typing import Any

import pytest

import llmguard as lg
from llmguard.backends import BudgetLedger, Quota, SlotBackend
from llmguard.testing import FakeLLM


class DictStore:
    """A CacheStore from its docstring: get/set/delete/clear/statistics, expiry by ttl."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Any, float]] = {}
        self.fail_gets = False

    async def get(self, key: str) -> Any:
        if self.fail_gets:
            raise ConnectionError("store down")
        value, until = self.entries.get(key, (None, -1.0))
        if until < asyncio.get_running_loop().time():
            return lg.Cache.MISSING
        return value

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.entries[key] = (value, asyncio.get_running_loop().time() + ttl)

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    async def clear(self) -> None:
        self.entries.clear()

    def statistics(self) -> Any:
        return {"size": len(self.entries)}


async def test_a_cache_store_written_from_its_docstring_works() -> None:
    """Hits come from the store, entries expire after ttl, a failing get is a miss (the call
    still succeeds)."""
    store, llm = DictStore(), FakeLLM()
    cache = lg.Cache(ttl=10, store=store)
    ask = lg.Pipeline(cache).wrap(llm.send_message)
    assert await ask("hi") == await ask("hi") == "echo: hi"
    assert llm.call_count == 1 and len(store.entries) == 1
    await asyncio.sleep(11)
    assert await ask("hi") == "echo: hi" and llm.call_count == 2
    store.fail_gets = True
    assert await ask("hi") == "echo: hi" and llm.call_count == 3
    assert cache.statistics().store_errors == 1


class LogBackend:
    """A RateLimitBackend from its docstring: a log of (time, tokens) per key, requests only."""

    def __init__(self) -> None:
        self.logs: dict[Hashable, dict[int, tuple[float, int]]] = {}
        self.paused: dict[Hashable, float] = {}
        self.tickets = itertools.count(1)

    async def reserve(self, key: Hashable, quotas: tuple[Quota, ...], tokens: int
                      ) -> tuple[float, Any]:
        now = asyncio.get_running_loop().time()
        log = self.logs.setdefault(key, {})
        wait = max(0.0, self.paused.get(key, 0.0) - now)
        for quota in quotas:
            inside = sorted(t for t, _ in log.values() if t > now - quota.window)
            if len(inside) >= quota.limit:
                wait = max(wait, inside[len(inside) - quota.limit] + quota.window - now + 1e-3)
        if wait > 0:
            return wait, None
        ticket = next(self.tickets)
        log[ticket] = (now, tokens)
        return 0.0, (key, ticket)

    def reconcile(self, key: Hashable, ticket: Any, tokens: int) -> None:
        at, _ = self.logs[key][ticket[1]]
        self.logs[key][ticket[1]] = (at, tokens)

    def refund(self, key: Hashable, ticket: Any) -> None:
        self.logs[key].pop(ticket[1], None)

    def pause(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float) -> None:
        until = asyncio.get_running_loop().time() + seconds
        self.paused[key] = max(self.paused.get(key, 0.0), until)

    def cap(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
            reset: float) -> None:
        pass  # optional tightening: a backend may ignore provider headers

    def headroom(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int, int, float]:
        return 0, 0, 0.0


async def test_a_rate_limit_backend_written_from_its_docstring_works() -> None:
    """RateLimit(rpm=3) on a hand-written backend: every call completes, never more than 3
    admitted in any 60 s window, and a call refused below is refunded (its entry is gone)."""
    backend, llm, arrivals = LogBackend(), FakeLLM(latency=1), []

    async def send(prompt: str) -> str:
        arrivals.append(asyncio.get_running_loop().time())
        return await llm.send_message(prompt)

    ask = lg.Pipeline(lg.RateLimit(rpm=3, backend=backend)).wrap(send)
    assert await asyncio.gather(*(ask(f"q{i}") for i in range(7))) == [
        f"echo: q{i}" for i in range(7)]
    for at in arrivals:
        assert sum(at - 60 < other <= at for other in arrivals) <= 3
    assert max(arrivals) >= 120  # 7 calls at 3 a minute: the third minute

    async def refuse(call: lg.Call, call_next: Any) -> Any:
        raise lg.QueueFull("refused below the rate limit")

    before = sum(len(log) for log in backend.logs.values())
    try:
        await lg.Pipeline(lg.RateLimit(rpm=30, backend=backend), refuse).wrap(send)("x")
    except lg.QueueFull:
        pass
    assert sum(len(log) for log in backend.logs.values()) == before


async def test_a_router_drives_a_rate_limit_backend_written_from_its_docstring() -> None:
    """A Router keeps its deployments' quotas in the hand-written backend: 9 calls over
    deployments of 2 and 3 RPM all complete, neither ever over its quota in any 60 s."""
    backend, arrivals = LogBackend(), {"a": [], "b": []}

    def deployment(name: str, rpm: int) -> lg.Deployment:
        async def send(prompt: str) -> str:
            arrivals[name].append(asyncio.get_running_loop().time())
            return prompt
        return lg.Deployment(send, name=name, rpm=rpm)

    router = lg.Router(deployment("a", 2), deployment("b", 3), backend=backend)
    ask = lg.Pipeline(router).wrap(deployment("base", 1).target)
    assert await asyncio.gather(*(ask(f"q{i}") for i in range(9))) == [f"q{i}" for i in range(9)]
    for name, rpm in (("a", 2), ("b", 3)):
        for at in arrivals[name]:
            assert sum(at - 60 < other <= at for other in arrivals[name]) <= rpm
    assert router.statistics().in_flight == 0
class CountedSlots:
    """SharedSlots from its docstring: try_acquire (one ask, never waits), release, held."""

    def __init__(self, counts: dict[str, int], name: str) -> None:
        self.counts, self.name, self.held = counts, name, 0

    async def try_acquire(self, limit: int) -> tuple[bool, float]:
        await asyncio.sleep(0)  # the round trip to the shared store
        if self.counts.get(self.name, 0) >= limit:
            return False, 0.05  # nobody announces a release elsewhere: ask again soon
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        self.held += 1
        return True, 0.0

    def release(self) -> None:
        self.counts[self.name] -= 1
        self.held -= 1


class SlotLogBackend(LogBackend):
    """A SlotBackend from its docstring: concurrency_slots(name) over one shared count."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def concurrency_slots(self, name: str) -> CountedSlots:
        return CountedSlots(self.counts, name)


async def test_a_router_shares_deployment_slots_through_a_slot_backend_from_its_docstring() -> None:
    """Two routers (as two processes would) on one hand-written SlotBackend, deployment "a"
    with concurrency=2 in each: never more than 2 calls at "a" across both, every call done
    (a slot freed by one router is found by the other's polling), nothing held afterwards."""
    backend, inside, peak = SlotLogBackend(), {"a": 0, "b": 0}, {"a": 0, "b": 0}
    assert isinstance(backend, SlotBackend)

    def deployment(name: str, concurrency: int) -> lg.Deployment:
        async def send(prompt: str) -> str:
            inside[name] += 1
            peak[name] = max(peak[name], inside[name])
            try:
                await asyncio.sleep(1)
            finally:
                inside[name] -= 1
            return prompt
        return lg.Deployment(send, name=name, rpm=10_000, concurrency=concurrency)

    routers = [lg.Router(deployment("a", 2), deployment("b", 1), backend=backend)
               for _ in range(2)]
    asks = [lg.Pipeline(r).wrap(deployment("base", 1).target) for r in routers]
    results = await asyncio.gather(*(ask(f"q{i}") for ask in asks for i in range(9)))
    assert sorted(results) == sorted(f"q{i}" for i in range(9) for _ in asks)
    assert peak == {"a": 2, "b": 1}
    assert backend.counts == {"deployment:a": 0, "deployment:b": 0}
    assert all(d.slots.held == 0 and d.in_flight == 0 for r in routers for d in r.deployments)


class EchoUpstream:
    """An Upstream from its docstring: chat, stream, embed, secrets, aclose; headers to the call."""

    async def chat(self, request: dict[str, Any], call: Any = None, /) -> Any:
        if call is not None:
            call.response_headers = {"x-ratelimit-remaining-requests": "3",
                                     "x-ratelimit-reset-requests": "60s"}
        text = request["messages"][-1]["content"]
        return {"object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": text}, "finish_reason": "stop"}]}

    async def stream(self, request: dict[str, Any], call: Any = None, /) -> Any:
        for word in request["messages"][-1]["content"].split():
            yield {"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": word}}]}

    async def embed(self, request: dict[str, Any], call: Any = None, /) -> Any:
        return {"object": "list", "data": [{"index": 0, "embedding": [1.0]}]}

    def secrets(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass


class SeenHeaders:
    """A HeaderObserver from its docstring: a layer with observe_response(call)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def __call__(self, call: lg.Call, call_next: Any, /) -> Any:
        return await call_next(call)

    def observe_response(self, call: lg.Call) -> None:
        self.seen.append(dict(call.response_headers or {}))


class Traced:
    """A BuildHook from its docstring: bind(pipeline), around_terminal(handler)."""

    def __init__(self) -> None:
        self.bound: list[Any] = []
        self.attempts = 0

    async def __call__(self, call: lg.Call, call_next: Any, /) -> Any:
        return await call_next(call)

    def bind(self, pipeline: Any) -> None:
        self.bound.append(pipeline)

    def around_terminal(self, handler: Any) -> Any:
        async def counted(call: lg.Call) -> Any:
            self.attempts += 1
            return await handler(call)
        return counted


async def test_an_upstream_observer_and_build_hook_written_from_their_docstrings_work() -> None:
    """The three seams of an application's stack: an Upstream sent to through the terminal
    (chat and stream), a HeaderObserver shown each attempt's response headers (and a
    RateLimit learning from them), a BuildHook bound once and wrapping the terminal."""
    from llmguard._upstream.protocol import Upstream
    from llmguard._upstream.select import terminal

    upstream = EchoUpstream()
    assert isinstance(upstream, Upstream)
    observer, traced = SeenHeaders(), Traced()
    assert isinstance(observer, lg.HeaderObserver) and isinstance(traced, lg.BuildHook)
    limit = lg.RateLimit(rpm=100)
    pipeline = lg.Pipeline(traced, observer, limit)
    handler = pipeline.build(terminal(upstream))
    messages = [{"role": "user", "content": "hi there"}]
    answer = await handler(lg.Call(upstream.chat, (), {"model": "m", "messages": messages}))
    assert answer["choices"][0]["message"]["content"] == "hi there"
    assert observer.seen == [{"x-ratelimit-remaining-requests": "3",
                              "x-ratelimit-reset-requests": "60s"}]
    assert limit.statistics().requests_available <= 3  # learned from the header
    stream = await handler(lg.Call(upstream.chat, (), {"model": "m", "messages": messages,
                                                       "stream": True}))
    assert [c["choices"][0]["delta"]["content"] async for c in stream] == ["hi", "there"]
    assert traced.bound == [pipeline] and traced.attempts == 2
class DictLedger:
    """A BudgetLedger from its docstring: totals per account, integer amounts, tickets."""

    recheck = None

    def __init__(self) -> None:
        self.accounts: dict[str, list[int]] = {}
        self.listeners: list[Any] = []
        self.ids = itertools.count(1)
        self.open: dict[int, int] = {}
        self.soft: set[str] = set()

    async def reserve(self, account: str, amount: int, cap: int, ends: float | None
                      ) -> tuple[Any, int, int]:
        spent, reserved = self.accounts.setdefault(account, [0, 0])
        if spent + reserved + amount > cap:
            return None, spent, reserved
        self.accounts[account][1] += amount
        ticket = next(self.ids)
        self.open[ticket] = amount
        return ticket, spent, reserved + amount

    def settle(self, account: str, ticket: Any, cost: int, *, soft: int | None = None,
               on_soft: Any = None) -> None:
        self.accounts[account][1] -= self.open.pop(ticket)
        self.accounts[account][0] += cost
        if soft is not None and self.accounts[account][0] >= soft and account not in self.soft:
            self.soft.add(account)
            on_soft()
        for callback in self.listeners:
            callback(account)

    def listen(self, callback: Any) -> None:
        self.listeners.append(callback)

    def totals(self, account: str) -> tuple[int, int]:
        spent, reserved = self.accounts.get(account, (0, 0))
        return spent, reserved

    async def read(self, account: str) -> tuple[int, int]:
        return self.totals(account)


async def test_a_budget_ledger_written_from_its_docstring_works() -> None:
    """Two Budgets share the ledger (different names); a burst waits on its settlements and
    ends within the cap; every ticket is settled exactly once; each budget's soft limit is
    published once."""
    ledger = DictLedger()
    assert isinstance(ledger, BudgetLedger)
    llm = FakeLLM(latency=1)
    budgets = [lg.Budget(0.001, prices={"m": (1.0, 2.0)}, backend=ledger, name=name, soft=0.5)
               for name in ("a", "b")]
    soft: list[lg.Event] = []
    subscription = lg.subscribe(soft.append, "budget_soft_limit")
    calls = [lg.Pipeline(b).wrap(llm.acompletion) for b in budgets]
    results = await asyncio.gather(*(
        calls[i % 2](model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        for i in range(100)), return_exceptions=True)
    assert {type(r).__name__ for r in results} <= {"dict", "BudgetExceeded"}
    assert not ledger.open and len(ledger.accounts) == 2
    assert all(spent <= 1_000_000 and reserved == 0 for spent, reserved in
               ledger.accounts.values())
    assert sum(isinstance(r, dict) for r in results) > 50
    subscription.close()
    assert len(soft) == 2


class ListLedger:
    """A BatchLedger from its docstring: submissions by chunk key, events applied as written,
    live() = neither collected nor abandoned."""

    def __init__(self) -> None:
        self.submissions: dict[str, Any] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def write(self, kind: str, key: str, **fields: Any) -> None:
        from llmguard._upstream.batches.ledger import Submission

        self.events.append((kind, key, fields))
        if kind == "intent":
            self.submissions[key] = Submission(key, fields["model"], list(fields["ids"]),
                                               asyncio.get_running_loop().time())
        elif kind == "file":
            self.submissions[key].file_id = fields["file_id"]
        elif kind == "batch":
            self.submissions[key].batch_id = fields["batch_id"]
        elif kind in ("collected", "abandoned"):
            setattr(self.submissions[key], kind, True)

    def live(self) -> list[Any]:
        return [s for s in self.submissions.values() if not (s.collected or s.abandoned)]


@pytest.mark.looptime(noop_cycles=42)  # (looptime's default: a real HTTP server on loopback)
async def test_a_batch_ledger_written_from_its_docstring_never_pays_twice() -> None:
    """A run stopped while its batch runs, then run again with the same ledger: the batch is
    adopted and collected, none created twice, no line executed twice."""
    import openai

    from llmguard._upstream.batches.engine import run_batches
    from llmguard._upstream.batches.openai_batches import OpenAIBatches
    from llmguard._upstream.batches.plan import Request
    from llmguard.testing import BatchAPIServer, BatchTimings

    ledger = ListLedger()
    requests = [Request(f"r{i}", {"model": "m", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": f"p{i}"}]})
                for i in range(20)]
    async with BatchAPIServer(timings=BatchTimings(per_request=0.1)) as server:
        provider = OpenAIBatches(openai.AsyncOpenAI(base_url=server.base_url, api_key="k"))
        stop, results = asyncio.Event(), []
        first = await run_batches(requests, provider, ledger, on_result=results.append,
                                  on_progress=lambda n: stop.set(), stop=stop, poll=0.5)
        assert first.created == 1 and first.running and not results
        again = await run_batches(requests, provider, ledger, on_result=results.append,
                                  poll=0.5)
        await provider.close()
    assert again.created == 0 and again.adopted == 1
    assert sorted(r.id for r in results) == sorted(r.id for r in requests)
    assert len(server.batches) == 1 and max(server.executions.values()) == 1
    assert [k for k, _key, _f in ledger.events] == ["intent", "file", "batch", "collected"]
