"""Guard the OpenAI SDK: ``AsyncOpenAI()``'s ``chat.completions.create``, ``responses.create``,
``embeddings.create`` and ``completions.create`` (:data:`METHODS`; the rest of the client is left
unguarded: see there).

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

from typing import Any

from .._core.call import Call
from .._core.layer import Handler
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from ._litellm_layer import server_of
from ._sdk import guard_method, without_retries

__all__ = ["METHODS", "guard", "wrap"]

#: The methods :func:`wrap` guards by default (dotted paths from the client): every method that
#: sends a model a request counted against its requests and tokens quotas. Anything else on the
#: client (``moderations``, ``images``, ``audio``, ``files``, ``batches``, ``beta.*``, the
#: ``with_raw_response``/``with_streaming_response`` views) is left as it is: pass ``methods=``
#: (or use :func:`guard`) to guard another one.
METHODS = ("chat.completions.create", "responses.create", "embeddings.create",
           "completions.create")


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
    return without_retries(client, pipeline, what, "AsyncOpenAI")


def _guard_resource(resource: Any, name: str, pipeline: Pipeline, client: Any,
                    path: str) -> Guarded[..., Any]:
    return guard_method(resource, name, pipeline.then(_Describe(client, path)))


def wrap(client: Any, pipeline: Pipeline, *, methods: tuple[str, ...] = METHODS) -> Any:
    """Return a copy of ``client`` (an ``AsyncOpenAI`` or ``AsyncAzureOpenAI``) whose ``methods``
    (dotted paths, by default :data:`METHODS`: chat completions, responses, embeddings and
    legacy completions) are guarded by ``pipeline``; every other method is left unguarded.

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
