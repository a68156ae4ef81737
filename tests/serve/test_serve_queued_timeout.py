"""The gateway's per-attempt ``timeout`` at a server that queues (#30, as ``llmguard run
--timeout``): an attempt waiting in the server's queue behind ours it is answering is not timed
out and sent again (LiteLLM's proxy queues 40-60 s under load and counts and answers a request
whose client gave up: each retry was counted twice). Over HTTP into the app ``llmguard serve``
runs, in this loop: virtual time."""

import asyncio
from typing import Any

import httpx
import pytest
from queue_server import Queue
from serve_helpers import write_config

from llmguard._serve.config import load
from llmguard._serve.server import make_app

CONFIG = """\
[models.m]
provider = "fake"
timeout = 5
retries = {retries}
concurrency = 32
"""
#: The timeout a deployment's own (the Router's: it moves an attempt that ran out of it).
DEPLOYED = """\
[models.m]
retries = {retries}
concurrency = 32
[[models.m.deployments]]
name = "a"
timeout = 5
rpm = 6000
"""


async def burst(tmp_path: Any, server: Queue, contents: list[str], retries: int = 2,
                config: str = CONFIG) -> list[httpx.Response]:
    """``contents`` sent at once to model ``m`` (``timeout = 5``) in front of ``server``."""
    app = make_app(load(str(write_config(tmp_path, config.format(retries=retries)))))
    app.state.gateway.models["m"].upstream = server
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    async def ask(content: str) -> httpx.Response:
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        return await client.post("/v1/chat/completions", json=body)

    try:
        return await asyncio.gather(*(ask(c) for c in contents))
    finally:
        await client.aclose()
        await app.state.gateway.aclose()


@pytest.mark.parametrize("config", [CONFIG, DEPLOYED], ids=["model", "deployment"])
async def test_a_burst_queued_longer_than_the_timeout_is_served_once_each(tmp_path,
                                                                          config) -> None:
    """30 at once to a server serving one a second, ``timeout = 5``, ``retries = 2``: the last
    waits 30 s in its queue while the server answers the ones before it. Every one is answered
    and taken once (timed from the send, 25 expired while queued; the server took each anyway
    and again when Retry sent it: counted twice, and the later ones failed after 3 attempts).
    The same with the ``timeout`` of a model's deployment (the Router's: timed from when it
    chose the deployment)."""
    server = Queue(1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    answers = await burst(tmp_path, server, [f"q{i}" for i in range(30)], config=config)
    assert [a.status_code for a in answers] == [200] * 30
    assert sorted(server.taken) == sorted(f"q{i}" for i in range(30))  # none taken twice
    assert loop.time() - start == pytest.approx(30.0, abs=0.1)


@pytest.mark.parametrize("config", [CONFIG, DEPLOYED], ids=["model", "deployment"])
async def test_a_hung_upstream_still_times_out_every_attempt_at_the_timeout(tmp_path,
                                                                           config) -> None:
    """Nothing answered: every attempt of a burst fails ``timeout`` s after its send (504), not
    one ``timeout`` after another (our own timeouts are not answers)."""
    server = Queue(1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    answers = await burst(tmp_path, server, ["hang"] * 20, retries=0, config=config)
    assert [a.status_code for a in answers] == [504] * 20
    assert all(a.json()["error"]["code"] == "timeout" for a in answers)
    assert loop.time() - start == pytest.approx(5.0, abs=0.01)
