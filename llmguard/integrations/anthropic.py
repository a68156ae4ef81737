"""Guard the Anthropic SDK: ``AsyncAnthropic().messages.create`` and ``messages.stream``.

::

    from anthropic import AsyncAnthropic
    from llmguard.integrations import anthropic as lg_anthropic

    pipeline = (lg.Pipeline(name="claude").retry(attempts=4)
                .rate_limit(rpm=50, input_tpm=30_000, output_tpm=8_000, refill="continuous"))
    client = lg_anthropic.wrap(AsyncAnthropic(max_retries=0), pipeline)   # a guarded copy
    message = await client.messages.create(model="claude-sonnet-4-5", max_tokens=1024,
                                           messages=[{"role": "user", "content": "Hello"}])
    async with client.messages.stream(model=..., max_tokens=1024, messages=[...]) as stream:
        async for text in stream.text_stream: ...

The anthropic package is never imported here until a stream helper is built: the client you
pass brings it. What this adds to a plain ``pipeline.wrap(client.messages.create)``:

- under a Retry layer the SDK's own retries are turned off (a copy of the client with
  ``max_retries=0``; a warning says so when your client had them on);
- when the pipeline has a ``RateLimit``, each request goes through ``with_raw_response`` and
  Anthropic's ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`` /
  ``-reset`` headers, of answers and of errors (a 429 with ``retry-after``), feed it, each to
  its quota (``input_tpm`` / ``output_tpm``);
- usage is read as Anthropic reports it: ``input_tokens`` plus the prompt-cache reads and
  writes (``call.record.usage``: cache tokens counted in the input, as the GenAI conventions
  ask, and apart), and for a stream the input of ``message_start`` with the output of the last
  ``message_delta``, so a RateLimit gives back the unused ``max_tokens`` when the stream ends;
- each call's record names the provider (``anthropic``), the server and the operation
  (``chat``), so Metrics exports ``gen_ai.provider.name``, ``server.address`` and
  ``gen_ai.operation.name``.
"""

from __future__ import annotations

import weakref
from typing import Any

from .._core.call import Call
from .._core.layer import Handler
from .._core.stream import Stream
from .._core.tokens import field
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from ._litellm_layer import server_of
from ._sdk import guard_method, without_retries

__all__ = ["METHODS", "guard", "wrap"]

#: The methods :func:`wrap` guards by default (dotted paths from the client).
METHODS = ("messages.create", "messages.stream")

#: The usage fields of a Messages API answer (``message_delta`` repeats some, cumulatively).
_USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_read_input_tokens")


def _stream_usage(stream: Stream) -> None:
    """Make ``stream.usage_chunk`` carry the whole usage once the answer ends: Anthropic sends
    the input in ``message_start`` and the output in ``message_delta``. Before a
    ``message_delta`` there is none, so a stream closed early keeps its reservation."""
    ref = weakref.ref(stream)  # no cycle through the stream: a dropped one settles at once
    seen: dict[str, Any] = {}

    def on_chunk(chunk: Any) -> None:
        kind = field(chunk, "type")
        if kind == "message_start":
            usage = field(field(chunk, "message"), "usage")
        elif kind == "message_delta":
            usage = field(chunk, "usage")
        else:
            return
        seen.update({name: value for name in _USAGE
                     if isinstance(value := field(usage, name), int)})
        target = ref()
        if kind == "message_delta" and target is not None:
            target.usage_chunk = {"usage": dict(seen)}

    stream.on_chunk(on_chunk)


class _Describe:
    """Innermost layer: write who answers to the call's record, and read a stream's usage."""

    __slots__ = ("_server",)

    def __init__(self, client: Any) -> None:
        self._server = server_of(str(getattr(client, "base_url", "") or ""))

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        record = call.record
        record.provider, record.server, record.operation = "anthropic", self._server, "chat"
        result = await call_next(call)
        if isinstance(result, Stream):
            _stream_usage(result)
        return result

    def __repr__(self) -> str:
        return f"<anthropic provider at {self._server}>"


class _MessageStream:
    """What a guarded ``messages.stream(...)`` returns: an async context manager that sends the
    request through the pipeline (``messages.create(stream=True)``) on entry and yields the
    SDK's own ``AsyncMessageStream`` over it (``text_stream``, ``get_final_message()``, ...)."""

    __slots__ = ("_create", "_kwargs", "_stream")

    def __init__(self, create: Guarded[..., Any], kwargs: dict[str, Any]) -> None:
        if "output_format" in kwargs:
            raise TypeError("a guarded messages.stream() takes no output_format=; pass "
                            "output_config={'format': ...} instead")
        self._create, self._kwargs = create, kwargs
        self._stream: Any = None

    async def __aenter__(self) -> Any:
        from anthropic import NOT_GIVEN
        from anthropic.lib.streaming import AsyncMessageStream

        events = await self._create(**self._kwargs, stream=True)
        self._stream = AsyncMessageStream(_Events(events), output_format=NOT_GIVEN)
        return self._stream

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._stream is not None:
            await self._stream.close()


class _Events:
    """The raw event stream ``AsyncMessageStream`` reads: the pipeline's :class:`Stream` (so
    closing it early settles the layers), with no HTTP response of its own to show."""

    __slots__ = ("_stream", "response")

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.response = None

    def __aiter__(self) -> Stream:
        return self._stream

    async def close(self) -> None:
        await self._stream.aclose()


def _guard_stream(create: Guarded[..., Any]) -> Any:
    def stream(**kwargs: Any) -> _MessageStream:
        """``messages.stream(...)`` through the pipeline (``async with``, as the SDK's)."""
        return _MessageStream(create, kwargs)

    return stream


def wrap(client: Any, pipeline: Pipeline, *, methods: tuple[str, ...] = METHODS) -> Any:
    """Return a copy of ``client`` (an ``anthropic.AsyncAnthropic``) whose ``methods`` (dotted
    paths: ``messages.create`` and ``messages.stream`` by default) are guarded by ``pipeline``.

    The copy shares the original's HTTP connection pool; the original is left unchanged.
    """
    _check(pipeline)
    if not callable(getattr(client, "with_options", None)):
        raise TypeError(
            f"wrap() expects an anthropic.AsyncAnthropic client, got {type(client).__qualname__}"
            "; to guard any other object's method use llmguard.wrap_client(obj, 'method', "
            "pipeline)")
    quiet = without_retries(client, pipeline, "llmguard.integrations.anthropic.wrap",
                            "AsyncAnthropic")
    client = quiet if quiet is not client else client.with_options()  # never touch theirs
    messages = client.messages
    create = guard_method(messages, "create", pipeline.then(_Describe(client)))
    for path in methods:
        if path == "messages.create":
            messages.create = create
        elif path == "messages.stream":
            messages.stream = _guard_stream(create)
        else:
            raise ValueError(f"wrap() guards 'messages.create' and 'messages.stream', got "
                             f"{path!r}; guard any other method with pipeline.wrap(...)")
    return client


def guard(method: Any, pipeline: Pipeline) -> Guarded[..., Any]:
    """Guard ``client.messages.create`` alone: ``guard(client.messages.create, pipeline)``.

    Under a Retry layer it is rebound to a copy of its client with ``max_retries=0``.
    """
    _check(pipeline)
    client = getattr(getattr(method, "__self__", None), "_client", None)
    if client is None or getattr(method, "__name__", None) != "create" or not callable(
            getattr(client, "with_options", None)):
        raise TypeError(f"guard() expects client.messages.create of an anthropic.AsyncAnthropic, "
                        f"got {method!r}; for any other async function use pipeline.wrap(fn)")
    quiet = without_retries(client, pipeline, "llmguard.integrations.anthropic.guard",
                            "AsyncAnthropic")
    return guard_method(quiet.messages, "create", pipeline.then(_Describe(quiet)))


def _check(pipeline: Any) -> None:
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a llmguard.Pipeline, got {type(pipeline).__qualname__}")
