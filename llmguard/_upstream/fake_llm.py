"""FakeLLM: an offline, scriptable stand-in for a chat model."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .._core.check import number, text
from .._core.tokens import estimate_tokens

__all__ = ["FakeLLM"]


class FakeLLM:
    """A deterministic offline chat model for tests, examples and benchmarks.

    Each call consumes the next entry of ``script`` (when one is left): an exception instance or
    class is raised, a string becomes the reply text, any other value is returned as is. Without
    a script entry it answers ``"<reply_prefix><last user message>"``. ``latency`` is awaited
    with ``asyncio.sleep`` (virtual under looptime), plus ``seconds_per_token`` per output token.

    It speaks both common shapes: ``await fake.send_message("hi")`` returns the reply text, and
    ``await fake.acompletion(model=..., messages=[...])`` returns an OpenAI-style
    ``chat.completion`` dict with ``usage``. Both stream too: ``fake.stream_message("hi")`` is an
    async generator of words, and ``acompletion(..., stream=True)`` returns an async iterator of
    ``chat.completion.chunk`` dicts (the last with ``usage`` when
    ``stream_options={"include_usage": True}``, as OpenAI does). A stream waits ``latency`` before
    its first chunk and ``seconds_per_token`` per token between chunks; it counts as in flight
    until it ends. A script entry that is an exception is raised before the first chunk.
    It records every call for assertions.
    """

    def __init__(
        self,
        script: Iterable[Any] = (),
        *,
        latency: float = 0.0,
        seconds_per_token: float = 0.0,
        reply_prefix: str = "echo: ",
        model: str = "fake",
    ) -> None:
        for name, value in (("latency", latency), ("seconds_per_token", seconds_per_token)):
            number(name, value, low_open=False, unit=" of seconds")
        if isinstance(script, (str, bytes)) or not isinstance(script, Iterable):
            raise TypeError(f"script must be a list of replies (str), exceptions or results, got "
                            f"{script!r}; wrap a single reply in a list")
        if not isinstance(reply_prefix, str):
            raise TypeError(f"reply_prefix must be a str, got {reply_prefix!r}")
        text("model", model)
        self.script: deque[Any] = deque(script)
        self.latency = latency
        self.seconds_per_token = seconds_per_token
        self.reply_prefix = reply_prefix
        self.model = model
        #: (args, kwargs) of every call, in arrival order.
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = itertools.count(1)

    @property
    def call_count(self) -> int:
        return len(self.calls)

    async def _answer(self, prompt: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                      streaming: bool = False) -> Any:
        self.calls.append((args, kwargs))
        self._enter()
        try:
            entry = self.script.popleft() if self.script else None
            reply = entry if isinstance(entry, str) or entry is None else None
            text = self.reply_prefix + prompt if reply is None else reply
            delay = self.latency
            if not streaming:  # a stream spends its per-token time between chunks
                delay += self.seconds_per_token * max(1, len(text) // 4)
            if delay:
                await asyncio.sleep(delay)
            if isinstance(entry, BaseException) or (
                isinstance(entry, type) and issubclass(entry, BaseException)
            ):
                raise entry
            return text if entry is None or isinstance(entry, str) else entry
        finally:
            self.in_flight -= 1

    def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def _pieces(self, text: str) -> AsyncIterator[str]:
        """The reply word by word (with its trailing space), ``seconds_per_token`` apart."""
        self._enter()  # in flight until the stream ends
        try:
            for i, piece in enumerate(re.findall(r"\S+\s*|\s+", text)):
                if i and self.seconds_per_token:
                    await asyncio.sleep(self.seconds_per_token * max(1, len(piece) // 4))
                yield piece
        finally:
            self.in_flight -= 1

    async def send_message(self, message: str, *args: Any, **kwargs: Any) -> str:
        """Agent-style call: returns the reply text."""
        return await self._answer(str(message), (message, *args), kwargs)

    __call__ = send_message

    async def stream_message(self, message: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Agent-style streaming call: yields the reply text word by word."""
        reply = await self._answer(str(message), (message, *args), kwargs, streaming=True)
        if not isinstance(reply, str):
            yield reply
            return
        async for piece in self._pieces(reply):
            yield piece

    async def acompletion(self, **kwargs: Any) -> Any:
        """OpenAI/litellm-style chat completion: returns a ``chat.completion`` dict."""
        messages = kwargs.get("messages") or []
        prompt = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        streaming = kwargs.get("stream") is True
        result = await self._answer(prompt, (), kwargs, streaming)
        if not isinstance(result, str):
            return result
        prompt_tokens = estimate_tokens(messages=messages, max_tokens=0)
        completion_tokens = max(1, len(result) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {"id": f"chatcmpl-fake-{next(self._ids)}", "model": kwargs.get("model", self.model)}
        if streaming:
            options = kwargs.get("stream_options") or {}
            return self._chunks(head, result, usage if options.get("include_usage") else None)
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    async def _chunks(self, head: dict[str, Any], text: str,
                      usage: dict[str, int] | None) -> AsyncIterator[dict[str, Any]]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {**head, "object": "chat.completion.chunk", "choices": choices, **extra}

        async for piece in self._pieces(text):
            yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            yield chunk([], usage=usage)

    def __repr__(self) -> str:
        return (
            f"<FakeLLM calls={self.call_count} in_flight={self.in_flight} "
            f"script_left={len(self.script)} latency={self.latency}>"
        )
