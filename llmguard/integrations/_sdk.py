"""What the OpenAI and Anthropic integrations share: both SDKs are generated the same way (a
client with ``max_retries`` and ``with_options``, resources whose methods return coroutines, a
``with_raw_response`` twin of each method, errors carrying ``response.headers``)."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from .._core.call import Call
from .._core.layer import HeaderObserver
from .._core.stream import Stream, is_stream_result
from .._pipeline.guarded import Guarded
from .._pipeline.pipeline import Pipeline
from ._util import has_retry

__all__ = ["coroutine_function", "guard_method", "send_raw", "without_retries"]


async def send_raw(call: Call) -> Any:
    """The terminal of a method guarded through ``with_raw_response``: the provider's response
    headers (of an answer or an error) go to ``call.response_headers``, for the pipeline's
    :class:`~llmguard.HeaderObserver` layers (``RateLimit``); the caller gets the parsed object,
    as the plain method returns it."""
    call.mark_sent()
    try:
        raw = await call.fn(*call.args, **call.kwargs)
    except Exception as exc:  # a 429 says the most about the quota: its headers count too
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None:
            call.response_headers = headers
        raise
    call.response_headers = raw.headers
    result = raw.parse()
    if inspect.isawaitable(result):  # anthropic's AsyncAPIResponse parses asynchronously
        result = await result
    if is_stream_result(result):  # stream=True: the raw response wrapped an AsyncStream
        return await Stream.start(result)
    return result


def without_retries(client: Any, pipeline: Pipeline, what: str, sdk: str) -> Any:
    """``client``, or under a Retry layer a copy with ``max_retries=0`` (warning when the client
    had retries on: each llmguard attempt would become several requests)."""
    retries = getattr(client, "max_retries", 0)
    if not has_retry(pipeline) or not retries:
        return client
    warnings.warn(
        f"{what}: this {sdk} client retries on its own (max_retries={retries}), and the "
        f"pipeline has a Retry layer, so each llmguard attempt would become up to {retries + 1} "
        f"requests. llmguard uses a copy of the client with max_retries=0; create the client with "
        f"{sdk}(max_retries=0) to silence this warning",
        stacklevel=4,
    )
    return client.with_options(max_retries=0)


def coroutine_function(method: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` as the ``async def`` it is: the SDKs' methods are sync wrappers
    (``@required_args``) returning a coroutine, which ``inspect`` cannot tell from a blocking
    function. Named and documented like ``like``."""
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await method(*args, **kwargs)

    return functools.update_wrapper(call, like)


def guard_method(resource: Any, name: str, pipeline: Pipeline) -> Guarded[..., Any]:
    """``resource.name`` guarded by ``pipeline``; through ``with_raw_response`` (looking and
    returning like the plain method) when a layer reads rate-limit headers."""
    method = getattr(resource, name)
    if not any(isinstance(layer, HeaderObserver) for layer in pipeline.layers):
        return pipeline.wrap(coroutine_function(method, method))
    raw = coroutine_function(getattr(resource.with_raw_response, name), method)
    return pipeline.wrap(raw, terminal=send_raw)
