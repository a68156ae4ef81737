"""Which upstream a model's requests go to, and the terminal handler that sends them."""

from __future__ import annotations

from typing import Any

from .._core.call import Call
from .._core.layer import Handler
from .._core.stream import Stream
from .attempt_timeout import Ahead
from .protocol import Upstream

__all__ = ["PROVIDERS", "make_upstream", "terminal"]

#: The providers an application may name: the offline fake, litellm, an OpenAI-compatible URL.
PROVIDERS = ("fake", "litellm", "openai")


def make_upstream(provider: str, *, name: str = "fake", base_url: str | None = None,
                  api_key: str | None = None, bounded: bool = False, **fake: Any) -> Upstream:
    """The upstream of one model: ``provider`` is one of :data:`PROVIDERS`; ``fake`` holds
    :class:`~llmguard._upstream.fake.FakeUpstream` options (latency, fail_status, ...);
    ``bounded``: the caller bounds each request's time (see ``HTTPUpstream``)."""
    if provider == "fake":
        from .fake import FakeUpstream

        return FakeUpstream(name, **fake)
    if provider == "litellm":
        from .litellm import LitellmUpstream

        return LitellmUpstream(base_url, api_key)
    if provider == "openai":
        if not base_url:
            raise ValueError('provider "openai" needs a base_url (an OpenAI-compatible server)')
        from .http import HTTPUpstream

        return HTTPUpstream(base_url, api_key, bounded=bounded)
    raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")


def terminal(upstream: Upstream, *, embed: bool = False, ahead: Ahead | None = None) -> Handler:
    """The innermost handler sending ``call.kwargs`` to ``upstream``: chat (a stream when
    ``stream`` is true, returned as an :class:`~llmguard._core.stream.Stream` whose first chunk
    has arrived) or ``embed``. It marks the attempt sent, and the upstream writes
    ``call.response_headers``. ``ahead``: the application's per-attempt timeout at this
    upstream (:mod:`.attempt_timeout`; a stream's until its first chunk)."""
    if embed:
        async def send_embed(call: Call) -> Any:
            call.mark_sent()
            if ahead is None:
                return await upstream.embed(call.kwargs, call)
            return await ahead.within(upstream.embed(call.kwargs, call), call.kwargs.get("model"))

        return send_embed

    async def send(call: Call) -> Any:
        call.mark_sent()
        kwargs = call.kwargs
        sent = (Stream.start(upstream.stream(kwargs, call)) if kwargs.get("stream")
                else upstream.chat(kwargs, call))
        return await (sent if ahead is None else ahead.within(sent, kwargs.get("model")))

    return send
