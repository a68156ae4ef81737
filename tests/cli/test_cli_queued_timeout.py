"""``llmguard run --timeout`` at a server that queues (#30): an attempt waiting in the server's
queue behind ours it is answering is not timed out (LiteLLM's proxy, 40-60 ms a request on a
loaded machine, kept the last of a 1,024 burst 40-60 s in its queue; expired at ``--timeout 60``
and sent again, each was counted and answered twice). In virtual time."""

import asyncio
from typing import Any

import pytest
from queue_server import Queue

from llmguard._cli.provider import Provider
from llmguard._upstream.errors import ProviderTimeout, RateLimited


def provider(server: Queue, timeout: float) -> Provider:
    p = Provider("http://127.0.0.1:9/v1", "sk-test", timeout=timeout)
    p.other = server  # type: ignore[assignment]
    return p


def ask(content: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


async def test_attempts_queued_behind_answered_ones_are_not_timed_out() -> None:
    """100 sent at once to a server serving one a second, ``timeout`` 5 s: the last waits 99 s
    in its queue, and every one is answered (timed from the send, 95 expired while queued and
    the server took each anyway: counted twice once retried). Each ends when the server
    serves it: the queue ahead of it moved all along."""
    server = Queue(1.0)
    p = provider(server, 5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(p(**ask(f"q{i}")) for i in range(100)),
                                   return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert loop.time() - start == pytest.approx(100.0, abs=0.1)


async def test_a_hung_server_still_times_out_every_attempt_at_the_timeout() -> None:
    """Nothing answered: every attempt of a burst fails ``timeout`` s after its send (our own
    timeouts are not answers: they do not restart the others' time one after another)."""
    server = Queue(1.0)
    p = provider(server, 5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(p(**ask("hang")) for _ in range(20)),
                                   return_exceptions=True)
    assert all(isinstance(r, ProviderTimeout) for r in results), results
    assert loop.time() - start == pytest.approx(5.0, abs=0.01)


async def test_a_request_lost_in_a_busy_server_times_out_after_those_before_it() -> None:
    """One request of a burst is never answered while the server answers the rest: it fails
    ``timeout`` s after the last one sent before it was answered (the 3rd of 10: the two
    before it answered at 1 s, so at 6 s), and the ones after it are answered in turn. An
    HTTP error (a 429) is an answer too: the queue moved."""
    server = Queue(1.0)
    p = provider(server, 5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended: dict[int, float] = {}

    async def one(i: int, content: str) -> Any:
        try:
            return await p(**ask(content))
        finally:
            ended[i] = loop.time() - start

    contents = ["q0", "429", "hang", *(f"q{i}" for i in range(3, 10))]
    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(contents)),
                                   return_exceptions=True)
    assert isinstance(results[1], RateLimited) and isinstance(results[2], ProviderTimeout)
    assert ended[2] == pytest.approx(1.0 + 5.0, abs=0.01)  # q0 answered at 1, the 429 at 1
    assert not [r for i, r in enumerate(results) if i not in (1, 2) and isinstance(r, Exception)]


async def test_llmguard_run_on_ray_times_attempts_as_the_local_run() -> None:
    """``llmguard run --ray --timeout 5``: the actors' stack has no Timeout layer (one timed
    each attempt from its send, and the actors' provider was unbounded: the defect above) and
    their provider bounds each attempt as the local run's: 30 queued 30 s, each answered."""
    pytest.importorskip("ray")
    from llmguard import Timeout
    from llmguard._cli.deployments import resolve
    from llmguard._cli.ray_launch import ray_parts
    from llmguard.cli import _parser

    args = _parser().parse_args(["run", "in.jsonl", "-o", "out.jsonl", "--ray", "--timeout", "5",
                                 "--api-base", "http://127.0.0.1:9/v1", "--model", "m"])
    assert resolve(args) is None  # as main() does
    stack, make_send = ray_parts(args)
    assert not [layer for layer in stack(None).layers if isinstance(layer, Timeout)]
    server = Queue(1.0)
    p = make_send()
    p.other = server
    results = await asyncio.gather(*(p(**ask(f"q{i}")) for i in range(30)),
                                   return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert len(server.taken) == 30


async def test_a_deployments_own_timeout_is_timed_as_the_runs() -> None:
    """A ``--config`` deployment's ``timeout`` (no ``--timeout``): the provider applies it as
    it does ``--timeout`` (the Router, which timed it from its choice of the deployment, no
    longer does: ``router_of``): 30 queued 30 s behind ours answered, each answered once; a
    request the deployment never answers fails 5 s after its send, naming that timeout."""
    from llmguard._upstream.deployments import DEPLOYMENT, DeploymentConfig, router_of

    deployment = DeploymentConfig(name="a", timeout=5.0)
    assert router_of((deployment,), "headroom", None, None).deployments[0].timeout is None
    server = Queue(1.0)
    p = Provider(deployments=(deployment,))
    p.routes["a"] = (server, None)  # type: ignore[assignment]
    results = await asyncio.gather(*(p(**ask(f"q{i}"), **{DEPLOYMENT: "a"}) for i in range(30)),
                                   return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert len(server.taken) == 30
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ProviderTimeout, match="deployment a's timeout 5 s"):
        await p(**ask("hang"), **{DEPLOYMENT: "a"})
    assert loop.time() - start == pytest.approx(5.0, abs=0.01)


async def test_a_callers_cancellation_stays_a_cancellation() -> None:
    """An attempt its caller cancels ends as a cancellation, not a timeout, and the others of
    the burst are timed as before (the one timer of the upstream goes on for them)."""
    server = Queue(1.0)
    p = provider(server, 5.0)
    tasks = [asyncio.ensure_future(p(**ask(c))) for c in ("q0", "hang", "hang", "q3")]
    await asyncio.sleep(0.5)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], ProviderTimeout)  # 5 s after q0 was answered, at 1 s
    assert not isinstance(results[0], BaseException) and not isinstance(results[3], BaseException)
