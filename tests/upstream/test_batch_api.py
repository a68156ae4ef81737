"""``llmguard.batch_api.run``: provider batches from Python, under virtual time, against the
simulated batch service through the real SDKs: results in input order, retries of expired and
failed lines, a cancelled run resumed from its ledger without a second submission."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmguard import batch_api
from llmguard._upstream.batches.plan import Limits, Request, split
from llmguard.testing import BatchAPIServer, BatchTimings

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")


def _requests(n: int, model: str = "gpt-4o-mini") -> list[dict]:
    return [{"custom_id": f"q{i}", "body": {"model": model, "max_tokens": 8,
                                            "messages": [{"role": "user", "content": f"p{i}"}]}}
            for i in range(n)]


async def test_results_in_input_order_with_failures_retried(tmp_path: Path) -> None:
    """Every request gets one result in input order; expired and failed lines are sent once
    more in a new batch; nothing is answered twice."""
    async with BatchAPIServer(fail_rate=0.05, expire_rate=0.05, seed=5) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        progress: list[int] = []
        results = await batch_api.run(_requests(300), client=client, poll=0.01,
                                      ledger=str(tmp_path / "l.jsonl"),
                                      on_progress=progress.append)
        assert [r.id for r in results] == [f"q{i}" for i in range(300)]
        assert sum(r.error is None for r in results) >= 285
        assert all(r.attempts == 2 for r in results if r.error is not None)
        assert {r.attempts for r in results} == {1, 2}
        assert len(server.batches) == 2 and max(server.executions.values()) == 1
        assert progress == sorted(progress) and progress[-1] == 300
        await client.close()


async def test_a_cancelled_run_resumes_from_its_ledger_without_a_second_batch(
        tmp_path: Path) -> None:
    """Cancel the run while its batch is in progress, run again with the same ledger: the batch
    is collected (and the answers of batches collected before are downloaded again), none is
    created twice."""
    timings = BatchTimings(validating=0.01, per_request=0.1, finalizing=0.01)
    async with BatchAPIServer(timings=timings) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        ledger = str(tmp_path / "l.jsonl")
        task = asyncio.ensure_future(batch_api.run(_requests(50), client=client, ledger=ledger,
                                                   poll=0.5))
        while not server.batches:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first = await batch_api.run(_requests(50), client=client, ledger=ledger, poll=0.5)
        again = await batch_api.run(_requests(50), client=client, ledger=ledger, poll=0.5)
        assert len(server.batches) == 1 and max(server.executions.values()) == 1
        assert [r.response for r in first] == [r.response for r in again]
        assert all(r.error is None for r in again)
        await client.close()


async def test_a_budget_caps_the_run_at_batch_prices(tmp_path: Path) -> None:
    """budget=: each batch reserves its lines' maximum cost at the batch price (half the
    online price here) before it is submitted and settles to its output's usage, so the bill
    at batch prices never passes the cap and comes within one line of it; the lines the cap
    leaves end as not_sent, never executed, and nothing is reserved afterwards."""
    import llmguard as lg

    budget = lg.Budget(0.0005, prices={"gpt-4o-mini": (1.0, 2.0)})
    assert budget.price("gpt-4o-mini", batch=True) == (0.5, 1.0)
    bound = budget.max_cost(_requests(1)[0]["body"], batch=True)
    async with BatchAPIServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        results = await batch_api.run(_requests(200), client=client, poll=0.01,
                                      ledger=str(tmp_path / "l.jsonl"), budget=budget)
        answered = [r for r in results if r.error is None]
        unsent = [r for r in results if r.error is not None]
        bill = sum(r.response["usage"]["prompt_tokens"] * 0.5
                   + r.response["usage"]["completion_tokens"] * 1.0 for r in answered) / 1e6
        assert 0.0005 - bound <= bill <= 0.0005
        assert unsent and {r.error["kind"] for r in unsent} == {"not_sent"}
        assert "higher cap" in unsent[0].error["message"]
        assert set(server.executions) == {r.id for r in answered}
        assert len(server.batches) > 2  # the cap was approached batch by batch
        stats = budget.statistics()
        assert stats.spent_usd == pytest.approx(bill, abs=1e-8) and stats.reserved_usd == 0
        await client.close()


async def test_anthropic_client(tmp_path: Path) -> None:
    """An AsyncAnthropic client goes through Message Batches; chat bodies become Messages API
    params (system message to ``system``), answers are Anthropic messages."""
    async with BatchAPIServer() as server:
        client = anthropic.AsyncAnthropic(base_url=server.root_url, api_key="k", max_retries=0)
        requests = _requests(10, "claude-3-5-haiku-latest")
        requests[0]["body"]["messages"].insert(0, {"role": "system", "content": "be brief"})
        results = await batch_api.run(requests, client=client, ledger=str(tmp_path / "l"),
                                      poll=0.01)
        assert [r.response["content"][0]["text"] for r in results] == [
            f"echo: p{i}" for i in range(10)]
        params = next(iter(server.batches.values())).requests[0][1]
        assert params["system"] == "be brief" and params["max_tokens"] == 8
        assert [m["role"] for m in params["messages"]] == ["user"]
        await client.close()


async def test_bad_input_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Duplicate ids, a line that is not a request, an unknown client: clear errors, nothing
    submitted."""
    with pytest.raises(ValueError, match="custom_id must be unique"):
        await batch_api.run(_requests(2) * 2, client=openai.AsyncOpenAI(api_key="k"),
                            ledger=str(tmp_path / "l"))
    with pytest.raises(TypeError, match=r"requests\[0\] must be a Batch API line"):
        await batch_api.run(["hello"], client=openai.AsyncOpenAI(api_key="k"),
                            ledger=str(tmp_path / "l"))
    with pytest.raises(TypeError, match="client must be an openai.AsyncOpenAI"):
        await batch_api.run(_requests(1), client=object(), ledger=str(tmp_path / "l"))


def test_chunks_respect_every_limit_and_keep_one_model_each() -> None:
    """Chunks hold one model, at most ``requests`` lines, ``bytes`` bytes and ``tokens``
    tokens (a single oversized line gets a chunk of its own), in input order; keys are stable."""
    requests = [Request(f"r{i}", {"model": "ab"[i % 2], "max_tokens": 10 + i,
                                  "messages": [{"role": "user", "content": "x" * i}]})
                for i in range(200)]
    limits = Limits(requests=30, bytes=4000, tokens=900)
    chunks = list(split(requests, limits))
    assert [r.id for c in chunks for r in c.requests if c.model == "a"] == [
        f"r{i}" for i in range(0, 200, 2)]
    for chunk in chunks:
        assert {r.body["model"] for r in chunk.requests} == {chunk.model}
        assert len(chunk.requests) <= 30
        assert len(chunk.requests) == 1 or (chunk.size <= 4000 and chunk.tokens <= 900)
    assert [c.key for c in split(requests, limits)] == [c.key for c in chunks]
