"""Server-sent events in OpenAI's streaming format: ``data: {chunk}\\n\\n`` ... ``data: [DONE]``.

A stream always ends with ``data: [DONE]`` and a complete HTTP body, even when it ends early:
an error after the first chunk (nothing can be retried once text reached the client) or the
gateway's drain deadline becomes one last ``data: {"error": {...}}`` event first, which the
openai SDK raises as an ``APIError``. An upstream stream that stops before every choice had its
``finish_reason`` is such an error (:class:`~.errors.StreamTruncated`): a cut answer is never
relayed as a complete one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

import llmguard as lg

from .errors import StreamTruncated

__all__ = ["DONE", "Ending", "StreamBody", "event", "relay"]

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    """One SSE event carrying ``obj`` as compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage_only(chunk: Any) -> bool:
    return isinstance(chunk, dict) and chunk.get("usage") is not None and not chunk.get("choices")


class Ending:
    """Watches a stream's chunks for each choice's ``finish_reason``; :meth:`check` raises
    :class:`StreamTruncated` at the end of a stream that stopped short of one."""

    __slots__ = ("started", "finished")

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.finished: set[int] = set()

    def see(self, chunk: Any) -> None:
        for choice in chunk.get("choices") or () if isinstance(chunk, dict) else ():
            index = choice.get("index", 0) if isinstance(choice, dict) else 0
            self.started.add(index)
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished.add(index)

    def check(self) -> None:
        if not self.finished or self.started - self.finished:
            raise StreamTruncated("the upstream's stream ended before its answer was complete "
                                  "(no finish_reason); the answer is cut, retry the request")


async def relay(stream: lg.Stream, *, bounded: Callable[[Any], Any], include_usage: bool,
                on_error: Callable[[BaseException], bytes]) -> AsyncIterator[bytes]:
    """The SSE body of ``stream``. ``bounded`` awaits each next chunk within the gateway's
    drain deadline; ``include_usage`` False drops the usage chunk the gateway asked upstream for
    (for its own accounting) but the client did not; ``on_error`` renders a final error."""
    ending = Ending()
    try:
        while True:
            try:
                chunk = await bounded(stream.__anext__())
            except StopAsyncIteration:
                try:
                    ending.check()
                except StreamTruncated as exc:
                    yield on_error(exc)
                break
            except Exception as exc:  # mid-stream: report it in the stream, then end it well
                yield on_error(exc)
                break
            ending.see(chunk)
            if not include_usage and _usage_only(chunk):
                continue
            yield event(chunk)
        yield DONE
    finally:  # exhausted, failed or the client went away: settle what the layers hold
        await stream.aclose()


class StreamBody(StreamingResponse):
    """A streamed answer whose every write must finish within ``write_timeout`` seconds.

    A client that stops reading (its socket buffers full) makes a write wait for ever, and with
    it whatever the stream holds: a model's concurrency slot, a tenant's. Past the timeout the
    body iterator is closed (its ``finally`` gives back what it holds, at once) and the answer
    ends unfinished; uvicorn then closes the connection."""

    def __init__(self, content: Any, *, write_timeout: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.write_timeout = write_timeout

    async def stream_response(self, send: Any) -> None:
        timeout = self.write_timeout

        async def bounded_send(message: Any) -> None:
            async with asyncio.timeout(timeout):
                await send(message)

        try:
            await super().stream_response(bounded_send)
        except TimeoutError:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
