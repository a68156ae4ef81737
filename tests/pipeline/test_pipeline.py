"""Composition, decorators and the Pipeline builder."""

import asyncio
import functools
import inspect

import pytest

import llmguard as lg
from llmguard.testing import FakeLLM


class Recorder:
    """A pass-through layer that records the order it saw calls in."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def __call__(self, call: lg.Call, call_next: lg.Handler):
        self.log.append(f"{self.name}>")
        try:
            return await call_next(call)
        finally:
            self.log.append(f"<{self.name}")

    def statistics(self) -> int:
        return len(self.log)


async def echo(x: int, *, suffix: str = "!") -> str:
    """Echo x with a suffix."""
    return f"{x}{suffix}"


async def test_first_layer_is_outermost() -> None:
    """Layers run in the order listed on the way in and in reverse on the way out."""
    log: list[str] = []
    guarded = lg.guard(Recorder("a", log), Recorder("b", log), Recorder("c", log))(echo)
    assert await guarded(1) == "1!"
    assert log == ["a>", "b>", "c>", "<c", "<b", "<a"]


async def test_layers_of_any_kind_of_call_method() -> None:
    """compose binds a layer's plain ``__call__`` once (a bound method, not the type's call
    slot on every call); a static ``__call__`` or a plain async function is called as given."""

    class Static:
        @staticmethod
        async def __call__(call: lg.Call, call_next: lg.Handler):
            return "static " + await call_next(call)

    async def plain(call: lg.Call, call_next: lg.Handler):
        return "plain " + await call_next(call)

    log: list[str] = []
    guarded = lg.guard(Static(), plain, Recorder("r", log))(echo)
    assert await guarded(1) == "static plain 1!"
    assert log == ["r>", "<r"]


async def test_guard_and_pipeline_build_the_same_thing() -> None:
    """guard(...) and Pipeline(...).then(...) produce the same composition."""
    log1: list[str] = []
    log2: list[str] = []
    g1 = lg.guard(Recorder("a", log1), Recorder("b", log1), name="n").wrap(echo)
    g2 = lg.Pipeline(name="n").then(Recorder("a", log2)).then(Recorder("b", log2)).wrap(echo)
    assert await g1(2) == await g2(2)
    assert log1 == log2
    assert g1.pipeline.name == g2.pipeline.name == "n"


def test_pipeline_is_immutable() -> None:
    """then() returns a new pipeline and leaves the base untouched."""
    base = lg.Pipeline(name="base")
    extended = base.then(Recorder("a", []))
    assert base.layers == () and len(extended.layers) == 1
    assert extended is not base and extended.name == "base"


def test_metadata_and_signature_are_preserved() -> None:
    """A guarded function keeps name, doc, __wrapped__ and signature."""
    guarded = lg.guard(Recorder("a", []))(echo)
    assert guarded.__name__ == "echo"
    assert guarded.__doc__ == "Echo x with a suffix."
    assert guarded.__wrapped__ is echo
    assert inspect.signature(guarded) == inspect.signature(echo)
    assert inspect.iscoroutinefunction(guarded)


async def test_methods_bound_methods_partials_and_callable_objects() -> None:
    """self passes through for methods; bound methods, partials and async callables work."""
    log: list[str] = []
    pipeline = lg.Pipeline(Recorder("a", log))

    class Agent:
        def __init__(self, name: str) -> None:
            self.name = name

        @pipeline
        async def send_message(self, message: str) -> str:
            return f"{self.name}:{message}"

    class Callable_:
        async def __call__(self, message: str) -> str:
            return message.upper()

    assert await Agent("x").send_message("hi") == "x:hi"
    assert await pipeline.wrap(FakeLLM().send_message)("hi") == "echo: hi"
    assert await pipeline.wrap(functools.partial(echo, suffix="?"))(3) == "3?"
    guarded_obj = pipeline.wrap(Callable_())
    assert await guarded_obj("hi") == "HI"
    assert guarded_obj.__name__ == "Callable_"
    assert log.count("a>") == 4


async def test_exceptions_pass_through_unchanged() -> None:
    """An exception from the function reaches the caller as the same object."""
    error = ValueError("boom")
    llm = FakeLLM([error])
    guarded = lg.guard(Recorder("a", []))(llm.send_message)
    with pytest.raises(ValueError) as info:
        await guarded("x")
    assert info.value is error


async def test_cancellation_passes_through() -> None:
    """Cancelling the caller cancels the call inside every layer, and layers unwind."""
    log: list[str] = []
    llm = FakeLLM(latency=10)
    guarded = lg.guard(Recorder("a", log), Recorder("b", log))(llm.send_message)
    task = asyncio.create_task(guarded("x"))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["a>", "b>", "<b", "<a"]
    assert llm.in_flight == 0


async def test_call_context_is_visible_to_layers() -> None:
    """Layers see the function, arguments, pipeline name and the call's typed record."""
    seen: list[lg.Call] = []

    async def inspector(call: lg.Call, call_next: lg.Handler):
        seen.append(call)
        assert call.record.sent == 0  # not sent yet
        return await call_next(call)

    guarded = lg.guard(inspector, name="chat")(echo)
    await guarded(5, suffix="?")
    (call,) = seen
    assert (call.fn, call.args, call.kwargs, call.name) == (echo, (5,), {"suffix": "?"}, "chat")
    assert call.attempt == 1 and call.record.sent == 1 and call.record.retries == 0
    assert "chat" in repr(call)


async def test_stats_snapshot_every_layer() -> None:
    """stats() maps each layer kind to its statistics(), numbering repeats."""
    guarded = lg.guard(Recorder("a", []), Recorder("b", []))(echo)
    await guarded(1)
    assert guarded.stats() == {"recorder": 2, "recorder_2": 2}


async def test_wrap_client_guards_in_place() -> None:
    """wrap_client replaces a (nested) method on an existing object without subclassing."""
    log: list[str] = []
    llm = FakeLLM()
    assert lg.wrap_client(llm, "send_message", [Recorder("a", log)]) is llm
    assert await llm.send_message("hi") == "echo: hi"

    class Completions:
        async def create(self, **kwargs):
            return kwargs

    class Chat:
        completions = Completions()

    class Client:
        chat = Chat()

    client = Client()
    lg.wrap_client(client, "chat.completions.create", lg.Pipeline(Recorder("b", log)))
    assert await client.chat.completions.create(model="m") == {"model": "m"}
    assert log == ["a>", "<a", "b>", "<b"]


def test_wrap_client_rejects_unknown_method() -> None:
    """A missing method is an AttributeError naming it."""
    with pytest.raises(AttributeError, match="send_mesage"):
        lg.wrap_client(FakeLLM(), "send_mesage", lg.Pipeline())


def test_sync_function_is_rejected_with_advice() -> None:
    """Guarding a plain function fails at decoration time and says what to do."""

    def blocking(x):
        return x

    with pytest.raises(TypeError, match="async def"):
        lg.guard()(blocking)


def test_non_layers_are_rejected() -> None:
    """A layer class instead of an instance, a sync callable or a pipeline is a TypeError."""
    with pytest.raises(TypeError, match="pass an instance"):
        lg.Pipeline(Recorder)
    with pytest.raises(TypeError, match="not a layer"):
        lg.Pipeline(lambda call, call_next: None)
    with pytest.raises(TypeError, match="Pipeline is not a layer"):
        lg.Pipeline(lg.Pipeline())


def test_same_layer_twice_is_rejected() -> None:
    """One layer instance twice in a pipeline, or re-wrapping through it, is a ValueError."""
    layer = Recorder("a", [])
    with pytest.raises(ValueError, match="twice"):
        lg.Pipeline(layer, layer)
    guarded = lg.guard(layer)(echo)
    with pytest.raises(ValueError, match="already guarded"):
        lg.guard(layer)(guarded)
    lg.guard(Recorder("b", []))(guarded)  # nesting different layers is fine


def test_bad_name_is_rejected() -> None:
    """The pipeline name must be a non-empty string."""
    with pytest.raises(ValueError, match="name"):
        lg.Pipeline(name="")


async def test_empty_pipeline_is_a_plain_pass_through() -> None:
    """An empty pipeline returns the function's result and exposes empty stats."""
    guarded = lg.Pipeline().wrap(echo)
    assert await guarded(7) == "7!"
    assert guarded.stats() == {}
    assert repr(guarded.pipeline) == "Pipeline(name=None)"
