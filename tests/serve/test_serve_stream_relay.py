"""A stream is relayed as complete only when the upstream completed it: an OpenAI-compatible
upstream (a plain aiohttp app written here, independently of the gateway) that ends its stream
early, without a ``finish_reason`` or without ``data: [DONE]``, reaches the client as an error
(the openai SDK raises), over SSE and over the WebSocket alike."""

from __future__ import annotations

import asyncio
import json
import threading

import openai
import pytest
from aiohttp import web
from serve_helpers import HANG_GUARD, served, write_config
from websockets.sync.client import connect

pytestmark = pytest.mark.looptime(False)  # real sockets: real time


def _chunk(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
            "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Upstream:
    """Streams by scenario, chosen by the last user message: ``whole`` (finish_reason and
    [DONE]), ``cut`` (two chunks, then the body ends), ``no-done`` (finish_reason, no [DONE])."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        scenario = body["messages"][-1]["content"]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk("partial ", None))
        await response.write(_chunk("answer", None))
        if scenario != "cut":
            await response.write(_chunk(None, "stop"))
        if scenario == "whole":
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> Upstream:
        self.thread.start()
        assert self.ready.wait(HANG_GUARD)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD)


def _config(tmp_path, port: int):
    return write_config(tmp_path, f"""
[models.up]
provider = "openai"
base_url = "http://127.0.0.1:{port}/v1"
retries = 0
""")


def _stream(server, scenario: str) -> str:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    text = ""
    for chunk in client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": scenario}], stream=True):
        text += "".join(c.delta.content or "" for c in chunk.choices)
    return text


@pytest.mark.parametrize("scenario", ["cut", "no-done"])
def test_truncated_upstream_stream_is_an_error_not_a_complete_answer(tmp_path, scenario) -> None:
    """The SDK raises an APIError (the gateway's error event) instead of returning a partial
    text as if it were the whole answer; a whole stream still passes."""
    with Upstream() as upstream, served(_config(tmp_path, upstream.port)) as server:
        assert _stream(server, "whole") == "partial answer"
        with pytest.raises(openai.APIError, match="cut|complete"):
            _stream(server, scenario)


def test_truncated_stream_over_the_websocket_ends_in_an_error(tmp_path) -> None:
    """On /v1/ws a cut stream ends with an ``error`` message, never ``done``."""
    with Upstream() as upstream, served(_config(tmp_path, upstream.port)) as server:
        with connect(server.url.replace("http", "ws") + "/v1/ws",
                     open_timeout=HANG_GUARD) as ws:
            ws.send(json.dumps({"type": "chat", "id": "c", "request": {
                "model": "up", "messages": [{"role": "user", "content": "cut"}],
                "stream": True}}))
            kinds = []
            while not kinds or kinds[-1] in ("chunk",):
                kinds.append(json.loads(ws.recv(timeout=HANG_GUARD))["type"])
    assert kinds[:2] == ["chunk", "chunk"] and kinds[-1] == "error"
