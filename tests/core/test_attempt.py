"""The Attempt: one per try (Retry) and per alternate (Fallback), hooks added and removed by
their owners, nothing of one attempt leaking into the next or outward."""

from __future__ import annotations

from typing import Any

import pytest

import llmguard as lg
from llmguard._core.attempt import Attempt, Hooks


def test_hooks_run_in_order_added_and_removers_remove() -> None:
    """``add`` returns the remover; hooks run oldest first; removing twice is harmless."""
    hooks: Hooks[Any] = Hooks()
    seen: list[str] = []
    remove_a = hooks.add(lambda: seen.append("a"))
    hooks.add(lambda: seen.append("b"))
    for hook in hooks:
        hook()
    remove_a()
    remove_a()
    for hook in hooks:
        hook()
    assert seen == ["a", "b", "b"] and len(hooks) == 1


def test_a_remover_takes_out_one_adding_of_its_hook_in_any_order() -> None:
    """A function added twice is there twice; each remover takes one out, whether it was
    added last (layers unhook in reverse) or not, and the rest keep their order."""
    hooks: Hooks[Any] = Hooks()

    def f() -> None: ...

    def g() -> None: ...

    first, second, third = hooks.add(f), hooks.add(f), hooks.add(g)
    first()
    assert list(hooks) == [f, g]
    third()
    assert list(hooks) == [f]
    second()
    second()
    assert list(hooks) == [] and not hooks


def test_add_and_discard_keep_the_order_of_the_hooks_lists() -> None:
    """``add_on_send``/``discard_on_send`` (what layers use: no remover, no list for one hook)
    behave as ``on_send.add`` and its remover: hooks run in the order added, a function added
    twice is there twice, a discard takes out one adding (the last one first), discarding one
    that is not there changes nothing; ``on_send`` shows the same hooks as a list, and both
    ways mix. The same for ``on_wait``."""
    for add, discard, listed, hooks in (
            ("add_on_send", "discard_on_send", "send_hooks", "on_send"),
            ("add_on_wait", "discard_on_wait", "wait_hooks", "on_wait")):
        attempt = Attempt()

        def f() -> None: ...

        def g() -> None: ...

        assert list(getattr(attempt, listed)()) == []
        getattr(attempt, add)(f)
        assert list(getattr(attempt, listed)()) == [f]
        getattr(attempt, discard)(g)  # not there: nothing changes
        assert list(getattr(attempt, listed)()) == [f]
        getattr(attempt, add)(g)
        getattr(attempt, add)(f)
        assert list(getattr(attempt, listed)()) == [f, g, f]
        getattr(attempt, discard)(f)
        assert list(getattr(attempt, listed)()) == [f, g]
        remove = getattr(attempt, hooks).add(f)  # the list view, then the layers' way again
        assert list(getattr(attempt, hooks)) == [f, g, f]
        getattr(attempt, discard)(g)
        remove()
        assert list(getattr(attempt, hooks)) == [f]
        getattr(attempt, discard)(f)
        assert list(getattr(attempt, listed)()) == [] and not getattr(attempt, hooks)


def test_one_hook_runs_when_the_attempt_is_sent_and_can_remove_itself() -> None:
    """A single hook kept as it is runs once when the attempt (or one inside it) is sent, and
    a hook that discards itself while the hooks run does not stop the others."""
    outer = Attempt()
    inner = Attempt(parent=outer)
    ran: list[str] = []

    def once() -> None:
        ran.append("once")
        outer.discard_on_send(once)

    outer.add_on_send(once)
    inner.add_on_send(lambda: ran.append("inner"))
    inner.reached_provider()
    assert ran == ["once", "inner"] and outer.sent and inner.sent
    assert list(outer.send_hooks()) == []


async def test_each_retry_attempt_is_fresh_and_the_callers_comes_back() -> None:
    """Retry gives each try a new Attempt (number, its deadline, not sent, no tokens or
    headers of the try before) and puts the caller's attempt back; a hook an outer layer added
    runs for every inner attempt sent, and the outer attempt counts as sent."""
    seen: list[tuple[int, bool, Any, Any]] = []
    sends: list[int] = []

    async def provider(call: lg.Call, call_next: Any, /) -> Any:
        seen.append((call.attempt, call.sent, call.tokens, call.response_headers))
        call.tokens, call.response_headers = 7, {"x": "1"}
        call.mark_sent()
        if call.attempt < 3:
            raise ConnectionError("down")
        return "ok"

    async def outer(call: lg.Call, call_next: Any, /) -> Any:
        remove = call.current.on_send.add(lambda: sends.append(call.attempt))
        try:
            return await call_next(call)
        finally:
            remove()

    pipeline = lg.Pipeline(outer, lg.Retry(attempts=3, backoff=0.001), provider)
    call = lg.Call(lambda: None)
    first = call.current
    assert await pipeline.build()(call) == "ok"
    assert seen == [(1, False, None, None), (2, False, None, None), (3, False, None, None)]
    assert sends == [1, 2, 3]
    assert call.current is first and first.sent and first.tokens is None


async def test_fallback_alternates_get_their_own_attempt_and_overrides() -> None:
    """Each alternate is attempt 1 with its overrides, within the caller's deadline; the
    caller's arguments and attempt come back after."""
    seen: list[tuple[Any, Any]] = []

    async def provider(call: lg.Call, call_next: Any, /) -> Any:
        seen.append((call.kwargs["model"], call.current.overrides))
        if call.kwargs["model"] == "a":
            raise ConnectionError("down")
        return call.kwargs["model"]

    call = lg.Call(lambda **_: None, (), {"model": "a"})
    call.current = Attempt(1, 123.0)
    caller = call.current
    result = await lg.Pipeline(lg.Fallback({"model": "b"}), provider).build()(call)
    assert result == "b" and seen == [("a", None), ("b", {"model": "b"})]
    assert call.current is caller and call.kwargs == {"model": "a"}


@pytest.mark.parametrize("per_partition", [True, False])
async def test_cache_per_partition_keeps_partitions_apart(per_partition: bool) -> None:
    """With ``per_partition=True`` one partition never reads another's answer; without, the
    same arguments share one entry."""
    answers = iter(["first", "second"])

    async def ask(prompt: str) -> str:
        return next(answers)

    handler = lg.Pipeline(lg.Cache(ttl=60, per_partition=per_partition)).build()
    results = []
    for tenant in ("acme", "globex"):
        call = lg.Call(ask, ("hi",))
        call.partition = tenant
        results.append(await handler(call))
    assert results == (["first", "second"] if per_partition else ["first", "first"])


async def test_after_wait_records_the_wait_and_returns_what_is_left_to_await() -> None:
    """``Call.after_wait`` is ``waited`` without its coroutine: it records the wait, runs the
    ``on_wait`` hooks (those of the attempts it runs inside first) and returns what is left to
    await: None with no hook or a hook done at once, else the hook's awaitable, or one that
    awaits the rest of a lineage's hooks in order."""

    async def noop() -> None:
        return None

    call = lg.Call(noop)
    assert call.after_wait(0.5, "concurrency_limit") is None
    assert (call.record.wait, call.record.delayed_by) == (0.5, "concurrency_limit")

    ran: list[str] = []
    call.current.add_on_wait(lambda: ran.append("at once"))
    assert call.after_wait(0.25, "concurrency_limit") is None and ran == ["at once"]
    assert call.record.wait == 0.75

    async def later() -> None:
        ran.append("awaited")

    def hook() -> Any:
        ran.append("hook")
        return later()

    call.current = Attempt(2, parent=call.current)  # as Retry starts one
    call.current.add_on_wait(hook)
    pending = call.after_wait(0.0, "concurrency_limit")
    assert pending is not None and ran == ["at once"]  # the parent is hooked: all in order
    await pending
    assert ran == ["at once", "at once", "hook", "awaited"]

    ran.clear()
    call.current = Attempt(1)
    call.current.add_on_wait(hook)
    pending = call.after_wait(0.0, "rate_limit")
    assert ran == ["hook"] and pending is not None  # one hook: its own awaitable
    await pending
    assert ran == ["hook", "awaited"]
