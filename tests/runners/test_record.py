"""One record format and one layer order for ``llmguard run`` and ``llmguard run --ray``."""

from __future__ import annotations

import pytest

import llmguard as lg
from llmguard._runners.lines import InputLine
from llmguard._cli.provider import Provider
from llmguard._cli.run import Settings, build_pipeline
from llmguard._cli.worker import make_worker
from llmguard._pipeline.stack import StackSpec, build_stack
from llmguard._runners.record import describe, make_record

FIELDS = ["id", "line", "ok", "model", "deployment", "response", "error", "usage", "cost", "latency",
          "elapsed", "attempts", "retries", "fallback", "cached", "metadata"]


def _done(sent: int, latency: float | None, models: tuple[str, ...], retries: int = 0,
          fallback: str | None = None) -> lg.CallRecord:
    done = lg.CallRecord()
    done.sent, done.latency, done.models = sent, latency, models
    done.retries, done.fallback = retries, fallback
    return done


def test_record_fields_and_their_order_are_the_documented_ones() -> None:
    """A success after a retry and a fallback: every documented field, in the --help order."""
    response = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    done = _done(3, 0.1234567, ("a", "b"), retries=1, fallback="model=b")
    record = make_record("x", 7, {"k": 1}, response=response, done=done, elapsed=1.23456789,
                         requested="a", cache=True)
    assert list(record) == FIELDS
    assert record | {"response": None} == {
        "id": "x", "line": 7, "ok": True, "model": "b", "deployment": None, "response": None,
        "error": None,
        "usage": {"input_tokens": 4, "output_tokens": 2}, "cost": None, "latency": 0.123457,
        "elapsed": 1.234568, "attempts": 3, "retries": 1, "fallback": True, "cached": False,
        "metadata": {"k": 1}}


def test_error_messages_are_redacted_and_kinds_classified() -> None:
    """A key echoed in an error message never reaches the record."""
    exc = lg.testing.ProviderError("bad key sk-abcdefghijklmnopqrstuvwx", status_code=401,
                                   headers={})
    err = describe(exc)
    assert err["type"] == "ProviderError" and "sk-abcdefghijklmnopqrstuvwx" not in err["message"]
    assert err["kind"] == lg.classify(exc).kind.value


@pytest.mark.looptime
async def test_cli_worker_and_ray_rows_write_the_same_record() -> None:
    """The CLI's worker and the Ray actor's record builder give one record for one line."""
    from llmguard.integrations._ray.rows import parse_row
    from llmguard.integrations._ray.rows import make_record as ray_record

    job = InputLine(line=1, id="line-1", request={"messages": [{"role": "user", "content": "hi"}]},
              metadata={"m": 1})
    provider = Provider()
    worker = make_worker(build_pipeline(Settings(input="i", output="o")).build(), provider,
                         model=None, cache=False)
    cli = await worker(job)
    row = parse_row({"line": 1, "text": '{"messages": [{"role": "user", "content": "hi"}], '
                                        '"metadata": {"m": 1}}'}, text_column="text")

    done = _done(cli["attempts"], cli["latency"], (cli["model"],))
    ray = ray_record(row, response=cli["response"], current=done, elapsed=cli["elapsed"],
                     requested="fake")
    assert ray == cli and cli["ok"] and cli["model"] == "fake"
    bad = InputLine(line=2, id="line-2", problem="line 2 is not valid JSON")
    invalid = {"kind": "invalid_input", "type": "InvalidInput", "message": bad.problem}
    assert await worker(bad) == ray_record(InputLine("line-2", 2), error=invalid)


def _kinds(pipeline: lg.Pipeline) -> list[str]:
    return [type(layer).__name__ for layer in pipeline.layers]


def test_cli_and_ray_stack_compose_the_same_layer_order() -> None:
    """Settings of `llmguard run` and the Ray Stack with the same options give the same layers
    in the same order (the Ray stack adds Timeout: its provider does not bound attempts)."""
    from llmguard.integrations.ray import Stack

    options = dict(rpm=600, fallbacks=("m2",), cache_ttl=60.0, retries=2)
    cli = _kinds(build_pipeline(Settings(input="i", output="o", stack=StackSpec(**options))))
    ray = _kinds(Stack(**options, timeout=None)(None))
    assert cli == ["Cache", "Fallback", "Retry", "Limits", "ConcurrencyLimit"]
    assert ray == ["Cache", "Fallback", "Retry", "RateLimit", "ConcurrencyLimit"]
    assert _kinds(Stack(**options)(None)) == ["Cache", "Fallback", "Retry", "Timeout",
                                              "RateLimit", "ConcurrencyLimit"]
    assert _kinds(build_stack(StackSpec(adaptive=True, retries=0, timeout=None),
                              metrics={})) == ["Metrics", "AdaptiveConcurrency"]
