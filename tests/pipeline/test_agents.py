"""Agents with a coroutine ``send_message``/``send_message_async``, guarded in place or by proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard._pipeline.client import GuardedProxy


class Agent:
    """Like the seeds' agents: an object with an async send_message_async (and state)."""

    def __init__(self, name: str = "assistant") -> None:
        self.name = name
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def send_message_async(self, message: str) -> str:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(1.0)
            return f"{self.name}: {message}"
        finally:
            self.in_flight -= 1


class SlottedAgent:
    """An agent that refuses attribute assignment (``__slots__``, like an extension type)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    async def send_message(self, message: str) -> str:
        return f"{self.name}: {message}"

    async def send_message_async(self, message: str) -> str:
        return f"{self.name} (async): {message}"


class Counting:
    """A layer counting the calls that pass through it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, call: lg.Call, call_next: lg.Handler) -> Any:
        self.calls += 1
        return await call_next(call)


async def test_agent_guarded_in_place() -> None:
    """wrap_client guards an ordinary agent's send_message_async in place and returns it."""
    agent, layer = Agent(), Counting()
    assert lg.wrap_client(agent, "send_message_async", lg.Pipeline(layer)) is agent
    assert await agent.send_message_async("hi") == "assistant: hi"
    assert layer.calls == 1


async def test_agent_refusing_assignment_is_guarded_through_a_proxy() -> None:
    """An agent with __slots__ gets a GuardedProxy: guarded methods go through the pipeline,
    everything else reaches the agent, isinstance still holds, and a second method can be
    guarded on the proxy."""
    agent, layer = SlottedAgent("bot"), Counting()
    proxy = lg.wrap_client(agent, "send_message", lg.Pipeline(layer))
    assert isinstance(proxy, GuardedProxy)
    assert isinstance(proxy, SlottedAgent)
    assert proxy.__wrapped__ is agent
    assert await proxy.send_message("hi") == "bot: hi"
    assert layer.calls == 1
    proxy.name = "renamed"  # plain attributes go to the agent
    assert agent.name == "renamed"
    second = Counting()
    assert lg.wrap_client(proxy, "send_message_async", lg.Pipeline(second)) is proxy
    assert await proxy.send_message_async("yo") == "renamed (async): yo"
    assert (layer.calls, second.calls) == (1, 1)
    assert "send_message" in repr(proxy)


class Roster:
    """An agent whose class has special methods and refuses attribute assignment."""

    __slots__ = ("members",)

    def __init__(self, members: list[str]) -> None:
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Any:
        return iter(self.members)

    def __contains__(self, item: str) -> bool:
        return item in self.members

    def __getitem__(self, index: int) -> str:
        return self.members[index]

    def __call__(self, greeting: str) -> str:
        return f"{greeting}, {len(self.members)}"

    def __hash__(self) -> int:
        return hash(tuple(self.members))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Roster) and other.members == self.members

    async def __aenter__(self) -> Roster:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def send_message(self, message: str) -> str:
        return f"{self.members[0]}: {message}"


async def test_proxy_forwards_every_special_method_copy_and_pickle() -> None:
    """The proxy behaves like the agent for len, iteration, in, [], calling, async with, hash;
    a copy is a proxy over a copy of the agent, still guarded; pickling pickles the agent."""
    import copy
    import pickle

    layer = Counting()
    proxy = lg.wrap_client(Roster(["ann", "bob"]), "send_message", lg.Pipeline(layer))
    assert isinstance(proxy, GuardedProxy)
    assert len(proxy) == 2 and list(proxy) == ["ann", "bob"] and "bob" in proxy
    assert proxy[1] == "bob" and proxy("hi") == "hi, 2"
    assert hash(proxy) == hash(Roster(["ann", "bob"])) and proxy == Roster(["ann", "bob"])
    async with proxy as entered:
        assert entered.members == ["ann", "bob"]
    for duplicate in (copy.copy(proxy), copy.deepcopy(proxy)):
        assert isinstance(duplicate, GuardedProxy) and duplicate.__wrapped__ is not proxy.__wrapped__
        assert await duplicate.send_message("yo") == "ann: yo"
    assert layer.calls == 2
    restored = pickle.loads(pickle.dumps(proxy))
    assert type(restored) is Roster and restored.members == ["ann", "bob"]


class Replies(dict):
    """A builtin ``__getitem__`` that returns a fresh coroutine: stands in for a native (PyO3)
    async method, which ``inspect`` cannot recognise as async."""

    def __missing__(self, message: str) -> Any:
        async def reply() -> str:
            return f"native: {message}"

        return reply()


class NativeAgent:
    __slots__ = ("_replies",)

    def __init__(self) -> None:
        self._replies = Replies()

    def __getattr__(self, name: str) -> Any:
        if name == "send_message":
            return self._replies.__getitem__
        raise AttributeError(name)


async def test_native_async_method_is_adapted() -> None:
    """A native method returning an awaitable (a PyO3 ``async fn``) is guarded: it is awaited
    inside the pipeline."""
    layer = Counting()
    proxy = lg.wrap_client(NativeAgent(), "send_message", lg.Pipeline(layer))
    assert await proxy.send_message("hi") == "native: hi"
    assert layer.calls == 1


def test_sync_method_is_still_refused() -> None:
    """A plain blocking method is refused with the message that says how to adapt it."""

    class Blocking:
        def send_message(self, message: str) -> str:
            return message

    with pytest.raises(TypeError, match="to_thread"):
        lg.wrap_client(Blocking(), "send_message", lg.Pipeline())


async def test_a_pool_of_agents_shares_one_pipeline() -> None:
    """Several agents guarded by one pipeline share its state: a ConcurrencyLimit(2) bounds the
    calls in flight across the whole pool, and every message is answered."""
    limit = lg.ConcurrencyLimit(2)
    pipeline = lg.Pipeline(limit)
    agents = [lg.wrap_client(Agent(f"a{i}"), "send_message_async", pipeline) for i in range(3)]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(a.in_flight for a in agents))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    replies = await asyncio.gather(
        *(agents[i % 3].send_message_async(f"m{i}") for i in range(9))
    )
    watcher.cancel()
    assert replies == [f"a{i % 3}: m{i}" for i in range(9)]
    assert peak == 2
    assert limit.statistics().in_flight == 0
