"""The upstreams the applications send through: the OpenAI-compatible HTTP transport against a
real loopback server, and the offline fake."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import llmguard as lg
from llmguard._core.layer import compose
from llmguard._upstream.errors import HTTPError, ProviderError, RateLimited, TransportError
from llmguard._upstream.fake import fake_model
from llmguard._upstream.http import HTTPUpstream
from llmguard._upstream.protocol import Upstream
from llmguard.testing import LoopbackServer, SlidingWindowServer

pytestmark = pytest.mark.looptime(False)  # real sockets: real time

KEY = "sk-transport-test-0123456789abcdef"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.mark.parametrize("bounded", [False, True])  # aiohttp, or the kept-alive connections
async def test_http_answers_and_429s_carry_their_headers_to_the_call(bounded: bool) -> None:
    """An answer's x-ratelimit headers are written to ``call.response_headers``; over quota,
    the 429 is an HTTPError with the status, the server's error code and its headers (also on
    the call), and the message names the server, never the key."""
    # A sliding window: a fixed one may roll over between the two requests (its boundaries are
    # the server thread's own monotonic clock), and the second would be answered.
    async with LoopbackServer(SlidingWindowServer(rpm=1, window=60.0)) as http:
        upstream = HTTPUpstream(http.base_url, KEY, bounded=bounded)
        assert isinstance(upstream, Upstream) and upstream.secrets() == [KEY]
        try:
            call = lg.Call(upstream.chat, (), dict(REQUEST))
            answer = await upstream.chat(dict(REQUEST), call)
            assert answer["choices"][0]["message"]["content"]
            assert call.response_headers["x-ratelimit-remaining-requests"] == "0"
            call = lg.Call(upstream.chat, (), dict(REQUEST))
            with pytest.raises(HTTPError) as info:
                await upstream.chat(dict(REQUEST), call)
        finally:
            await upstream.aclose()
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "retry-after" in {k.lower() for k in error.headers}
    assert call.response_headers is error.headers
    assert http.base_url.split("//")[1] in str(error) and KEY not in str(error)
    assert lg.classify(error).kind is lg.FailureKind.RATE_LIMITED


@pytest.mark.parametrize("bounded", [False, True])
async def test_a_refused_connection_is_a_transport_error(bounded: bool) -> None:
    """Nothing listening: a TransportError (classified CONNECTION, retryable) naming the
    server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    upstream = HTTPUpstream(f"http://127.0.0.1:{port}/v1", KEY, bounded=bounded)
    try:
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}") as info:
            await upstream.chat(dict(REQUEST))
    finally:
        await upstream.aclose()
    assert lg.classify(info.value).kind is lg.FailureKind.CONNECTION and KEY not in str(info.value)


@pytest.mark.parametrize("bounded", [False, True], ids=["aiohttp", "kept-alive"])
async def test_a_request_the_server_never_saw_is_not_counted_as_sent(bounded: bool) -> None:
    """Refused (nothing listening), or the connection closed by the server before it read a
    byte (a keep-alive connection it was closing as we wrote: 24 of a burst after a pause
    against LiteLLM's proxy): the attempt is marked not sent, so a rate limit in front gives
    its reservation back (counted, it held the quota for a window and its retry waited one)."""
    async def close_at_once(reader: Any, writer: Any) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    closing = server.sockets[0].getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    try:
        for port in (refused, closing):
            upstream = HTTPUpstream(f"http://127.0.0.1:{port}/v1", KEY, bounded=bounded)
            limit = lg.RateLimit(rpm=1)
            try:
                call = lg.Call(upstream.chat, (), dict(REQUEST))

                async def send(c: lg.Call) -> Any:
                    c.mark_sent()
                    return await upstream.chat(c.kwargs, c)

                with pytest.raises(TransportError):
                    await compose([limit], send)(call)
            finally:
                await upstream.aclose()
            assert not call.sent and call.record.sent == 0
            stats = limit.statistics()
            assert stats.refunds == 1 and stats.requests_available == 1, stats
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.looptime
async def test_the_fake_models_answer_stream_embed_and_fail_as_named() -> None:
    """``fake`` echoes (whole, streamed, embedded deterministically); ``fake-fail`` is a 500 and
    ``fake-429`` a 429 with retry-after."""
    fake = fake_model("fake")
    answer = await fake.chat(dict(REQUEST))
    assert answer["choices"][0]["message"]["content"] == "echo: hi"
    chunks = [c async for c in fake.stream(dict(REQUEST))]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    one = await fake.embed({"model": "e", "input": ["a"]})
    two = await fake.embed({"model": "e", "input": ["a"]})
    assert one["data"] == two["data"]
    with pytest.raises(ProviderError) as failed:
        await fake_model("fake-fail").chat(dict(REQUEST))
    assert failed.value.status_code == 500
    with pytest.raises(RateLimited) as limited:
        await fake_model("fake-429").chat(dict(REQUEST))
    assert limited.value.headers == {"retry-after": "0.01"}


def test_a_litellm_upstreams_repr_shows_no_password() -> None:
    """``api_base`` with a user-info password (a proxy behind basic auth) is shown without it
    (the repr printed it)."""
    from llmguard._upstream.litellm import LitellmUpstream

    shown = repr(LitellmUpstream("https://user:s3cret@proxy.example/v1", "sk-key"))
    assert "s3cret" not in shown and "sk-key" not in shown and "proxy.example" in shown
