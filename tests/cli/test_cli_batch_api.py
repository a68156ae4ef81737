"""`llmguard run --batch-api` in a subprocess against the simulated batch service over HTTP (the
real openai and anthropic SDKs): every line recorded once, in input order; nothing paid twice
after a kill; Ctrl-C leaves the batches running (or cancels them) and says how to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmguard.testing import BatchAPIServer, BatchTimings

pytestmark = pytest.mark.looptime(False)
ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 120  #: a safety net against a hung child, never an assertion about speed
FAST = BatchTimings(validating=0.02, per_request=0.0002, finalizing=0.02)


def _input(path: Path, n: int, model: str = "gpt-4o-mini") -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"c{i}", "body": {
                "model": model, "max_tokens": 16,
                "messages": [{"role": "user", "content": f"q{i}"}]}}) + "\n")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}


def _args(src: Path, out: Path, server: BatchAPIServer, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llmguard", "run", str(src), "-o", str(out), "--batch-api",
            "--api-base", server.base_url, "--model", "gpt-4o-mini", "--poll", "0.05",
            "--api-key", "test-key", *extra]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=HANG_GUARD)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_thousand_lines_each_recorded_once_in_input_order(tmp_path: Path) -> None:
    """1,000 lines, 2% failing and 1% expiring at the provider: one record per line in input
    order with its custom_id, the failed and expired lines sent once more in a new batch, no
    line answered twice, and the summary prices the run at batch and online prices."""
    src = _input(tmp_path / "in.jsonl", 1000)
    out = tmp_path / "out.jsonl"
    server = BatchAPIServer(fail_rate=0.02, expire_rate=0.01, timings=FAST, seed=7)
    with server.in_thread():
        done = _run(_args(src, out, server))
    assert done.returncode in (0, 1), done.stderr
    records = _records(out)
    assert [r["id"] for r in records] == [f"c{i}" for i in range(1000)]
    assert [r["line"] for r in records] == list(range(1, 1001))
    assert max(server.executions.values()) == 1
    assert sum(r["ok"] for r in records) >= 995  # a line fails only if it failed twice
    resent = [r for r in records if r["attempts"] == 2]
    assert resent and all(r["retries"] == 1 for r in resent)
    assert len(server.batches) == 2
    assert "at batch prices (online:" in done.stdout
    assert records[0]["cost"] > 0


def test_kill_then_resume_submits_no_line_twice(tmp_path: Path) -> None:
    """SIGKILL while the batch runs, then --resume: the submitted batch is collected, not sent
    again; also when the kill came before its id reached the ledger (found by metadata)."""
    src = _input(tmp_path / "in.jsonl", 300)
    for lose_id in (False, True):
        out = tmp_path / f"out-{lose_id}.jsonl"
        slow = BatchTimings(validating=0.05, per_request=0.01, finalizing=0.05)
        server = BatchAPIServer(timings=slow)
        with server.in_thread():
            child = subprocess.Popen(_args(src, out, server), env=_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_until(lambda: server.batches, "a batch was created")
            child.send_signal(signal.SIGKILL)
            child.wait(HANG_GUARD)
            ledger = Path(f"{out}.batches.jsonl")
            if lose_id:  # as if killed between the create call and the ledger write
                kept = [x for x in ledger.read_text().splitlines() if '"batch"' not in x]
                ledger.write_text("\n".join(kept) + "\n")
            resumed = _run([*_args(src, out, server), "--resume"])
        assert resumed.returncode == 0, resumed.stderr
        assert len(server.batches) == 1
        assert "1 collected from an earlier run" in resumed.stdout
        assert [r["id"] for r in _records(out)] == [f"c{i}" for i in range(300)]
        assert max(server.executions.values()) == 1


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_while_polling_exits_and_says_how_to_resume(tmp_path: Path, cancel: bool) -> None:
    """SIGINT while polling: exit 130 at once with the running batch named and the resume
    command; --cancel-on-interrupt cancels it at the provider; --resume then finishes the run."""
    src = _input(tmp_path / "in.jsonl", 100)
    out = tmp_path / "out.jsonl"
    # Slow (100 s a batch) until the interrupt is handled, then fast: at 3 s a batch a loaded
    # machine let it end before the child handled SIGINT.
    server = BatchAPIServer(timings=BatchTimings(validating=0.05, per_request=1.0))
    extra = ("--cancel-on-interrupt",) if cancel else ()
    with server.in_thread():
        child = subprocess.Popen(_args(src, out, server, *extra), env=_env(), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_until(lambda: server.batches, "a batch was created")
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=HANG_GUARD)
        assert child.returncode == 130, stderr
        batch = next(iter(server.batches.values()))
        assert "--resume" in stderr and "test-key" not in stderr
        if cancel:
            assert "cancelled at the provider" in stderr
            _wait_until(lambda: batch.status == "cancelled", "the batch was cancelled")
        else:
            assert batch.id in stderr and "keep running" in stderr
            assert batch.status in ("validating", "in_progress")  # left running
        server.timings = FAST
        resumed = _run([*_args(src, out, server), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert [r["id"] for r in _records(out)] == [f"c{i}" for i in range(100)]
    assert max(server.executions.values()) == 1


def test_openai_batch_format_online_and_batch(tmp_path: Path) -> None:
    """--format openai-batch writes the Batch API's output shape, for a batch run and for an
    online run alike, in input order."""
    src = _input(tmp_path / "in.jsonl", 20)
    server = BatchAPIServer(timings=FAST)
    with server.in_thread():
        batch = _run(_args(src, tmp_path / "b.jsonl", server, "--format", "openai-batch"))
        online = _run([sys.executable, "-m", "llmguard", "run", str(src), "-o",
                       str(tmp_path / "o.jsonl"), "--api-base", server.base_url, "--model",
                       "gpt-4o-mini", "--api-key", "test-key", "--format", "openai-batch"])
    for done, name in ((batch, "b.jsonl"), (online, "o.jsonl")):
        assert done.returncode == 0, done.stderr
        rows = _records(tmp_path / name)
        assert [r["custom_id"] for r in rows] == [f"c{i}" for i in range(20)]
        assert all(set(r) == {"id", "custom_id", "response", "error"} for r in rows)
        assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows)
        assert rows[3]["response"]["body"]["choices"][0]["message"]["content"] == "echo: q3"


def test_batch_fallback_online_and_the_enqueued_token_limit(tmp_path: Path) -> None:
    """Lines that failed in a batch go online through the normal stack with --batch-fallback
    online; with --enqueued-tokens, chunks wait for earlier batches instead of failing; without
    it, a batch the provider fails for the token limit is queued again. Nothing is lost."""
    src = _input(tmp_path / "in.jsonl", 400)
    server = BatchAPIServer(fail_rate=0.05, timings=FAST, seed=2)
    with server.in_thread():
        done = _run(_args(src, tmp_path / "a.jsonl", server, "--batch-fallback", "online"))
    assert done.returncode == 0, done.stderr
    assert server.online == sum(1 for _, (status, _) in next(iter(server.batches.values()))
                                .done.items() if status == 500)
    assert len(_records(tmp_path / "a.jsonl")) == 400
    for flag in (("--enqueued-tokens", "3000"), ()):
        server = BatchAPIServer(enqueued_token_limit=3000, timings=FAST)
        with server.in_thread():
            done = _run(_args(src, tmp_path / f"t{len(flag)}.jsonl", server, *flag))
        assert done.returncode == 0, done.stderr
        statuses = [b.status for b in server.batches.values()]
        assert len(statuses) > 2 and statuses.count("completed") == len(statuses) - (
            0 if flag else statuses.count("failed"))
        if flag:
            assert "failed" not in statuses
        assert max(server.executions.values()) == 1
        assert sum(r["ok"] for r in _records(tmp_path / f"t{len(flag)}.jsonl")) == 400


def test_anthropic_message_batches(tmp_path: Path) -> None:
    """--provider anthropic: the lines go to Message Batches as Messages API params; expired
    lines are sent again; every line recorded once with Anthropic's message."""
    src = _input(tmp_path / "in.jsonl", 150, model="claude-3-5-haiku-latest")
    out = tmp_path / "out.jsonl"
    server = BatchAPIServer(expire_rate=0.05, timings=FAST, seed=4)
    with server.in_thread():
        done = _run([*_args(src, out, server, "--provider", "anthropic"), "--model",
                     "claude-3-5-haiku-latest"])
    assert done.returncode in (0, 1), done.stderr  # 1: a line expired twice (p = 0.25%)
    records = _records(out)
    assert [r["id"] for r in records] == [f"c{i}" for i in range(150)]
    answered = [r for r in records if r["ok"]]
    assert len(answered) >= 145 and all(r["response"]["type"] == "message" for r in answered)
    assert all(r["error"]["kind"] == "expired" for r in records if not r["ok"])
    assert max(server.prompts.values()) == 1 and len(server.prompts) == len(answered)


def test_the_exact_key_never_reaches_the_terminal(tmp_path: Path) -> None:
    """A provider that echoes a wrong key in its 401: llmguard says the batch API refused it and
    shows neither that key (whatever its shape) nor writes it anywhere."""
    src = _input(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    server = BatchAPIServer(api_key="right", timings=FAST)
    with server.in_thread():
        done = _run([*_args(src, out, server)[:-2], "--api-key", "gsk_live_abcdef1234567"])
    assert done.returncode == 2
    assert "401" in done.stderr or "Incorrect API key" in done.stderr
    assert "gsk_live_abcdef1234567" not in done.stderr + done.stdout
    for path in tmp_path.iterdir():
        assert "gsk_live_abcdef1234567" not in path.read_text()


def test_bad_combinations_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """--batch-api without an output file or a model, with --ray, or batch options without
    --batch-api: usage errors (exit 2) naming the option."""
    src = _input(tmp_path / "in.jsonl", 2)
    cases = [
        (["-o", "-", "--batch-api", "--model", "m"], "--batch-api needs an output file"),
        (["-o", str(tmp_path / "x.jsonl"), "--batch-api"], "pass --model"),
        (["-o", str(tmp_path / "x.jsonl"), "--provider", "anthropic"], "go with --batch-api"),
        (["-o", str(tmp_path / "x.jsonl"), "--batch-api", "--model", "m", "--ray"],
         "does not go with --ray"),
    ]
    for args, message in cases:
        done = _run([sys.executable, "-m", "llmguard", "run", str(src), *args])
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_max_cost_holds_at_batch_prices_and_resume_sends_the_rest(tmp_path: Path) -> None:
    """--batch-api --max-cost: batches reserve their lines' bound at the batch price (half of
    --price) and settle to the output's usage, so the records' bill stays within the cap; the
    lines not sent are not recorded, the run exits 4 saying how many, and --resume with a new
    cap sends exactly those, no line executed twice."""
    src = _input(tmp_path / "in.jsonl", 100)
    out = tmp_path / "out.jsonl"
    server = BatchAPIServer(timings=FAST)
    with server.in_thread():
        first = _run(_args(src, out, server, "--max-cost", "0.0004", "--price", "1,2"))
        assert first.returncode == 4, first.stderr
        done = _records(out)
        bill = sum(r["usage"]["input_tokens"] * 0.5 + r["usage"]["output_tokens"] * 1.0
                   for r in done) / 1e6
        assert 0.0003 <= bill <= 0.0004 and all(r["ok"] for r in done)
        assert sum(r["cost"] for r in done) == pytest.approx(bill)
        assert f"{100 - len(done)} lines not sent" in first.stdout
        assert "stopped at --max-cost" in first.stderr and "--max-cost USD" in first.stderr
        again = _run([*_args(src, out, server, "--max-cost", "1", "--price", "1,2"), "--resume"])
    assert again.returncode == 0, again.stderr
    assert sorted(r["id"] for r in _records(out)) == sorted(f"c{i}" for i in range(100))
    assert max(server.executions.values()) == 1
