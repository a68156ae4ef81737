"""Guard the OpenAI SDK: ``AsyncOpenAI().chat.completions.create`` and ``responses.create``.

::

    from llmguard.integrations import openai as lg_openai

    pipeline = lg.Pipeline(name="chat").retry(attempts=4).rate_limit(rpm=500, tpm=200_000)
    client = lg_openai.wrap(AsyncOpenAI(max_retries=0), pipeline)      # a guarded copy
    await client.chat.completions.create(model="gpt-4o-mini", messages=[...])

    create = lg_openai.guard(AsyncOpenAI().responses.create, pipeline)  # one method

The openai package is never imported here: the client you pass brings it. What this adds to a
plain ``pipeline.wrap(client.chat.completions.create)``:

- under a Retry layer the SDK's own retries are turned off (a copy of the client with
  ``max_retries=0``; a warning says so when your client had them on), so attempts never multiply;
- when the pipeline has a :class:`~llmguard.HeaderObserver` layer (``RateLimit``), each request
  goes through ``with_raw_response`` and the provider's response headers, from answers and from
  errors alike, go to ``call.response_headers``, which the observer reads
  (``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*``), so its buckets follow what the
  provider reports. The caller still gets the parsed object;
- each call's record names the provider (``openai``, or ``azure.ai.openai`` for an Azure client),
  the server the client talks to and the operation, so Metrics exports ``gen_ai.provider.name``,
  ``server.address`` and ``gen_ai.operation.name`` as the GenAI conventions ask.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from .._core.call import Call, Handler, HeaderObserver
from .._core.stream import Stream, is_stream_result
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from ._litellm_layer import server_of
from ._util import has_retry

__all__ = ["METHODS", "guard", "wrap"]

#: The methods :func:`wrap` guards by default (dotted paths from the client).
METHODS = ("chat.completions.create", "responses.create")


async def _send_raw(call: Call) -> Any:
    """The terminal of a method guarded through ``with_raw_response``: the provider's response
    headers (of an answer or an error) go to ``call.response_headers``, for the pipeline's header
    observers; the caller gets the parsed object, as ``create`` returns it."""
    call.mark_sent()
    try:
        raw = await call.fn(*call.args, **call.kwargs)
    except Exception as exc:  # a 429 says the most about the quota: read its headers too
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None:
            call.response_headers = headers
        raise
    call.response_headers = raw.headers
    result = raw.parse()
    if is_stream_result(result):  # stream=True: the raw response wrapped an AsyncStream
        return await Stream.start(result)
    return result


#: ``gen_ai.operation.name`` of the SDK methods that have one in the GenAI conventions.
OPERATIONS = {"chat.completions.create": "chat", "completions.create": "text_completion",
              "embeddings.create": "embeddings", "responses.create": "chat"}


class _Describe:
    """Innermost layer: write who answers to the call's record (provider, server, operation)."""

    __slots__ = ("_operation", "_provider", "_server")

    def __init__(self, client: Any, path: str) -> None:
        azure = "azure" in type(client).__name__.lower()
        self._provider = "azure.ai.openai" if azure else "openai"
        self._server = server_of(str(getattr(client, "base_url", "") or ""))
        self._operation = OPERATIONS.get(path)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        record = call.record
        record.provider, record.server = self._provider, self._server
        if self._operation is not None:
            record.operation = self._operation
        return await call_next(call)

    def __repr__(self) -> str:
        return f"<openai provider {self._provider} at {self._server}>"


def _client_without_retries(client: Any, pipeline: Pipeline, what: str) -> Any:
    retries = getattr(client, "max_retries", 0)
    if not has_retry(pipeline) or not retries:
        return client
    warnings.warn(
        f"{what}: this AsyncOpenAI client retries on its own (max_retries={retries}), and the "
        f"pipeline has a Retry layer, so each llmguard attempt would become up to {retries + 1} "
        "requests. llmguard uses a copy of the client with max_retries=0; create the client with "
        "AsyncOpenAI(max_retries=0) to silence this warning",
        stacklevel=3,
    )
    return client.with_options(max_retries=0)


def _coroutine_function(method: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    # The SDK's methods are sync wrappers (``@required_args``) that return a coroutine, which
    # ``inspect`` cannot tell from a blocking function: present them as the ``async def`` they are.
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await method(*args, **kwargs)

    return functools.update_wrapper(call, like)


def _guard_resource(resource: Any, name: str, pipeline: Pipeline, client: Any,
                    path: str) -> Guarded[..., Any]:
    method = getattr(resource, name)
    pipeline = pipeline.then(_Describe(client, path))
    if not any(isinstance(layer, HeaderObserver) for layer in pipeline.layers):
        return pipeline.wrap(_coroutine_function(method, method))
    # Call ``with_raw_response.create`` to see the headers, but look and return like ``create``.
    raw = _coroutine_function(getattr(resource.with_raw_response, name), method)
    return pipeline.wrap(raw, terminal=_send_raw)


def wrap(client: Any, pipeline: Pipeline, *, methods: tuple[str, ...] = METHODS) -> Any:
    """Return a copy of ``client`` (an ``AsyncOpenAI`` or ``AsyncAzureOpenAI``) whose ``methods``
    (dotted paths, by default chat completions and responses) are guarded by ``pipeline``.

    The copy shares the original's HTTP connection pool; the original is left unchanged.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a llmguard.Pipeline, got {type(pipeline).__qualname__}")
    if not callable(getattr(client, "with_options", None)):
        raise TypeError(
            f"wrap() expects an openai.AsyncOpenAI client, got {type(client).__qualname__}; to "
            "guard any other object's method use llmguard.wrap_client(obj, 'method', pipeline)"
        )
    quiet = _client_without_retries(client, pipeline, "llmguard.integrations.openai.wrap")
    client = quiet if quiet is not client else client.with_options()  # never touch theirs
    for path in methods:
        *parts, name = path.split(".")
        resource = client
        try:
            for part in parts:
                resource = getattr(resource, part)
            getattr(resource, name)
        except AttributeError:
            raise ValueError(
                f"this openai client has no {path!r} (an older SDK?); pass methods= with the "
                f"paths it has, e.g. methods=('chat.completions.create',)"
            ) from None
        setattr(resource, name, _guard_resource(resource, name, pipeline, client, path))
    return client


def guard(method: Any, pipeline: Pipeline) -> Guarded[..., Any]:
    """Guard one SDK method, e.g. ``guard(client.chat.completions.create, pipeline)``.

    Under a Retry layer the method is rebound to a copy of its client with ``max_retries=0``.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a llmguard.Pipeline, got {type(pipeline).__qualname__}")
    resource = getattr(method, "__self__", None)
    client = getattr(resource, "_client", None)
    if client is None or not callable(getattr(client, "with_options", None)):
        raise TypeError(
            f"guard() expects a method of an openai.AsyncOpenAI resource such as "
            f"client.chat.completions.create, got {method!r}; for any other async function use "
            "pipeline.wrap(fn)"
        )
    quiet = _client_without_retries(client, pipeline, "llmguard.integrations.openai.guard")
    if quiet is not client:
        resource = type(resource)(quiet)  # the same resource, bound to the retry-free copy
    path = _path_of(resource, method.__name__)
    return _guard_resource(resource, method.__name__, pipeline, quiet, path)


def _path_of(resource: Any, name: str) -> str:
    """``chat.completions.create`` for ``client.chat.completions.create``: the resource's module
    under ``openai.resources`` (``chat.completions.completions``), repeats collapsed."""
    parts = type(resource).__module__.split(".resources.", 1)[-1].split(".")
    dotted = [part for i, part in enumerate(parts) if i == 0 or part != parts[i - 1]]
    return ".".join([*dotted, name])
