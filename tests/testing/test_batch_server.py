"""The simulated batch service, driven by the real openai and anthropic SDKs over HTTP: every
state of the lifecycle, the request counts, the output and error files, the provider's limits."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmguard.testing import BatchAPIServer, BatchTimings

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

ENDED = ("completed", "failed", "expired", "cancelled")


def _lines(n: int, model: str = "m", max_tokens: int = 10) -> bytes:
    return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": model, "max_tokens": max_tokens,
                                        "messages": [{"role": "user", "content": f"q{i}"}]}})
                   + "\n" for i in range(n)).encode()


async def _submit(client, data: bytes, **metadata: str):
    file = await client.files.create(file=("in.jsonl", data), purpose="batch")
    return await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                       completion_window="24h", metadata=metadata or None)


async def _wait(client, batch, seen: list[str] | None = None):
    while batch.status not in ENDED:
        await asyncio.sleep(0.01)
        batch = await client.batches.retrieve(batch.id)
        if seen is not None and (not seen or seen[-1] != batch.status):
            seen.append(batch.status)
    return batch


async def test_a_batch_goes_through_its_states_and_answers_every_line_once() -> None:
    """validating -> in_progress -> finalizing -> completed; the output file holds one answer per
    line (in any order), the counts add up, each custom_id is answered exactly once."""
    async with BatchAPIServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        batch = await _submit(client, _lines(30), run="a")
        assert batch.status == "validating" and batch.metadata == {"run": "a"}
        seen: list[str] = []
        batch = await _wait(client, batch, seen)
        assert seen[-1] == "completed" and "in_progress" in seen
        assert batch.request_counts.total == batch.request_counts.completed == 30
        rows = [json.loads(x) for x in (await client.files.content(batch.output_file_id)).text
                .splitlines()]
        assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(30))
        assert all(r["response"]["status_code"] == 200 for r in rows)
        assert rows[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("echo")
        assert batch.error_file_id is None
        assert set(server.executions.values()) == {1}
        await client.close()


async def test_failed_and_expired_lines_go_to_the_error_file() -> None:
    """fail_rate lines answer 500 and expire_rate lines end batch_expired (the batch ends
    expired); both are in the error file, never in the output file."""
    async with BatchAPIServer(fail_rate=0.1, expire_rate=0.1, seed=3) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        batch = await _wait(client, await _submit(client, _lines(200)))
        assert batch.status == "expired"
        errors = [json.loads(x) for x in (await client.files.content(batch.error_file_id)).text
                  .splitlines()]
        output = (await client.files.content(batch.output_file_id)).text.splitlines()
        codes = {(e["error"] or {}).get("code") or e["response"]["status_code"] for e in errors}
        assert codes == {"batch_expired", 500}
        assert len(errors) + len(output) == 200
        assert batch.request_counts.failed == len(errors)
        await client.close()


async def test_validation_failures_and_the_enqueued_token_limit() -> None:
    """Mixed models fail validation; a batch past the per-model enqueued-token limit fails with
    token_limit_exceeded while another is in progress, and is accepted once it ended."""
    timings = BatchTimings(validating=0.01, per_request=0.05, finalizing=0.01)
    async with BatchAPIServer(enqueued_token_limit=500, timings=timings) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        mixed = _lines(2, "a") + _lines(2, "b").replace(b'"r0"', b'"x0"').replace(b'"r1"', b'"x1"')
        failed = await _wait(client, await _submit(client, mixed))
        assert failed.status == "failed" and failed.errors.data[0].code == "mixed_models"
        first = await _submit(client, _lines(10, max_tokens=30))  # ~10 x 41 tokens
        await asyncio.sleep(0.05)
        second = await _wait(client, await _submit(client, _lines(10, max_tokens=30)))
        assert second.status == "failed"
        assert second.errors.data[0].code == "token_limit_exceeded"
        assert (await _wait(client, first)).status == "completed"
        third = await _wait(client, await _submit(client, _lines(10, max_tokens=30)))
        assert third.status == "completed"
        await client.close()


async def test_cancel_and_list() -> None:
    """Cancel moves a batch through cancelling to cancelled (lines not run are in the error
    file); the list is newest first, paginated, and carries each batch's metadata."""
    timings = BatchTimings(validating=0.01, per_request=1.0, finalizing=0.01)
    async with BatchAPIServer(timings=timings) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        ids = [(await _submit(client, _lines(5), n=str(n))).id for n in range(3)]
        await asyncio.sleep(1.5)
        cancelling = await client.batches.cancel(ids[0])
        assert cancelling.status == "cancelling"
        ended = await _wait(client, cancelling)
        assert ended.status == "cancelled" and ended.request_counts.completed < 5
        listed = [b async for b in client.batches.list(limit=2)]
        assert [b.id for b in listed] == ids[::-1]
        assert [b.metadata["n"] for b in listed] == ["2", "1", "0"]
        await client.close()


async def test_anthropic_message_batches() -> None:
    """Message Batches: in_progress -> ended, request counts by outcome, results as JSONL through
    the SDK's results(), expired lines reported as expired."""
    async with BatchAPIServer(expire_rate=0.2, seed=1) as server:
        client = anthropic.AsyncAnthropic(base_url=server.root_url, api_key="k", max_retries=0)
        batch = await client.messages.batches.create(requests=[
            {"custom_id": f"a{i}", "params": {"model": "claude", "max_tokens": 10,
                                              "messages": [{"role": "user", "content": "hi"}]}}
            for i in range(20)])
        assert batch.processing_status == "in_progress"
        while batch.processing_status != "ended":
            await asyncio.sleep(0.01)
            batch = await client.messages.batches.retrieve(batch.id)
        counts = batch.request_counts
        assert counts.succeeded + counts.expired == 20 and counts.expired > 0
        results = [r async for r in await client.messages.batches.results(batch.id)]
        assert sorted(r.custom_id for r in results) == sorted(f"a{i}" for i in range(20))
        kinds = {r.result.type for r in results}
        assert kinds == {"succeeded", "expired"}
        assert [b.id async for b in client.messages.batches.list()] == [batch.id]
        await client.close()
