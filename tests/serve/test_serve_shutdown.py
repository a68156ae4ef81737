"""Graceful shutdown of a real `llmguard serve` process: SIGTERM stops accepting connections,
in-flight streams finish within the grace period, and those that cannot end cleanly (a final
error event and [DONE]) rather than being cut; the process exits 0."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from serve_helpers import HANG_GUARD, ChildServer, chat, write_config

pytestmark = pytest.mark.looptime(False)

CONFIG = """
[models.slow]
latency = 0.3
seconds_per_token = 0.25
retries = 0
"""
LONG = [{"role": "user", "content": "one two three four five six seven eight"}]


def wait_refused(url: str) -> None:
    """Until a new connection is refused (the listening socket is closed)."""
    give_up = time.monotonic() + HANG_GUARD
    while time.monotonic() < give_up:
        try:
            httpx.get(url + "/healthz", timeout=1.0, headers={"connection": "close"})
        except httpx.TransportError:
            return
        time.sleep(0.02)
    raise AssertionError("still accepting connections after SIGTERM")


def events(lines) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_sigterm_lets_streams_finish_and_refuses_new_connections(tmp_path) -> None:
    config = write_config(tmp_path, CONFIG)
    with ChildServer("--config", str(config), "--grace", "30") as server:
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=HANG_GUARD,
                          json={"model": "slow", "messages": LONG, "stream": True}) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert server.proc.poll() is None
            server.proc.send_signal(15)
            wait_refused(server.url)
            rest = events(lines)
        assert rest[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in [first[6:], *rest[:-1]])
        assert text == "echo: one two three four five six seven eight"
        assert server.proc.wait(HANG_GUARD) == 0


def test_grace_running_out_ends_work_with_an_answer(tmp_path) -> None:
    """A stream and a plain request longer than the grace: the stream gets a final error event
    and [DONE] (the openai SDK raises it as an APIError), the request a 503."""
    config = write_config(tmp_path, CONFIG + '[models.stuck]\nlatency = 600\nretries = 0\n')
    with ChildServer("--config", str(config), "--grace", "0.5") as server:
        plain: dict[str, httpx.Response] = {}

        def post() -> None:
            plain["r"] = httpx.post(server.url + "/v1/chat/completions", json=chat("stuck"),
                                    timeout=HANG_GUARD)

        thread = threading.Thread(target=post)
        thread.start()  # before the stream, whose first chunk comes 0.3 s after it arrives
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=HANG_GUARD,
                          json={"model": "slow", "messages": LONG * 20, "stream": True}) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            server.proc.send_signal(15)
            rest = events(lines)
        thread.join(HANG_GUARD)
        assert rest[-1] == "[DONE]"
        error = json.loads(rest[-2])["error"]
        assert error["code"] == "server_shutting_down"
        assert plain["r"].status_code == 503
        assert plain["r"].json()["error"]["code"] == "server_shutting_down"
        assert server.proc.wait(HANG_GUARD) == 0


async def test_bounded_turns_the_drain_deadline_into_shutting_down_only() -> None:
    """A request awaiting since before a drain ends with ShuttingDown at the deadline (no
    scope was made for it); a cancellation of the caller's own stays a cancellation."""
    import asyncio

    import pytest

    from llmguard._serve.config import ServeConfig
    from llmguard._serve.gateway import Gateway, ShuttingDown

    gateway = Gateway(ServeConfig(models={}, tenants={}))
    forever = asyncio.get_running_loop().create_future
    cancelled = asyncio.ensure_future(gateway.bounded(forever()))
    late = asyncio.ensure_future(gateway.bounded(forever()))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gateway.drain(grace=5)
    await asyncio.sleep(4.9)
    assert not late.done()
    with pytest.raises(ShuttingDown):
        await late
    assert not gateway._running and not gateway._expired
    await gateway.aclose()
