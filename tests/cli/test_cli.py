"""`llmguard run` end to end: the real command in a subprocess, on small files, with the offline
fake models (`fake`, `fake-fail`, `fake-429`, `fake-hang`)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: A safety net against a hung child, never an assertion about speed.
HANG_GUARD = 120


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": ""}


def llmguard(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmguard", *args], cwd=cwd, env=_env(), capture_output=True,
        text=True, timeout=HANG_GUARD,
    )


def spawn(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmguard", *args], cwd=cwd, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_records(proc: subprocess.Popen[str], count: int) -> None:
    """Block on the child's --verbose log (no sleeping) until ``count`` records are written."""
    seen = 0
    assert proc.stderr is not None
    while seen < count:
        line = proc.stderr.readline()
        assert line, f"child exited early: {proc.wait()}"
        seen += line.startswith("line ")


def test_help_is_complete(tmp_path: Path) -> None:
    """`llmguard run --help` documents every option, the record fields and the exit codes."""
    proc = llmguard(tmp_path, "run", "--help")
    assert proc.returncode == 0
    for option in ("--output", "--model", "--rpm", "--tpm", "--concurrency", "--adaptive",
                   "--retries", "--timeout", "--fallback-model", "--cache-ttl",
                   "--priority-field", "--unordered", "--burst", "--retry-failed", "--resume", "--overwrite",
                   "--metrics-port", "--grace", "exit codes", "130", "fake-fail"):
        assert option in proc.stdout, option


def test_ordered_output_and_record_shape(tmp_path: Path) -> None:
    """Records come out in input order even though later lines finish first, and carry the id,
    response, usage, latency, attempts and the model that answered; the summary counts them."""
    lines = [chat("x" * (400 - 40 * i), metadata={"row": i}) for i in range(10)]
    lines[3] = {"custom_id": "req-3", "body": chat("batch form")}
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--concurrency", "10")
    assert proc.returncode == 0, proc.stderr
    out = records(tmp_path / "out.jsonl")
    assert [r["line"] for r in out] == list(range(1, 11))
    assert out[3]["id"] == "req-3" and out[0]["id"] == "line-1"
    first = out[0]
    assert first["ok"] and first["model"] == "fake" and first["attempts"] == 1
    assert first["metadata"] == {"row": 0}
    assert first["usage"]["input_tokens"] > 0 and first["latency"] > 0
    assert first["response"]["choices"][0]["message"]["content"].startswith("echo: xxx")
    assert "10 done: 10 ok, 0 failed" in proc.stdout


def test_sorting_reads_each_line_number_whatever_the_id(tmp_path: Path) -> None:
    """The final sort reads a record's line from its prefix (not a parse of the response):
    ids with quotes, backslashes or a fake ``"line":`` inside, and records in another shape
    (parsed in full), all land in line order, byte for byte."""
    from llmguard._cli.finish import sort_by_line
    from llmguard._runners.record import make_record

    ids = ['plain', 'a "quoted", "line": 1, id', 'back\\slash\\', 'é ünï', '\\"']
    records = [json.dumps(make_record(rid, line, None, response={"n": line}),
                          ensure_ascii=False) for line, rid in zip((5, 3, 4, 2, 1), ids)]
    records.append(json.dumps({"custom_id": "x", "line": 0}))  # no llmguard prefix
    path = tmp_path / "out.jsonl"
    path.write_text("".join(r + "\n" for r in records), encoding="utf-8")
    sort_by_line(str(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["line"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert sorted(lines) == sorted(records)


def test_unordered_writes_as_lines_finish(tmp_path: Path) -> None:
    """With --unordered a slow first line is written after the quick ones; each line once."""
    lines = [chat("slow " * 400)] + [chat(f"quick {i}") for i in range(5)]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--unordered")
    assert proc.returncode == 0, proc.stderr
    order = [r["line"] for r in records(tmp_path / "out.jsonl")]
    assert sorted(order) == list(range(1, 7))
    assert order[-1] == 1


def test_malformed_lines_become_error_records(tmp_path: Path) -> None:
    """Bad lines become error records naming their line number; the other lines still run and
    the exit code says some lines failed."""
    src = write_jsonl(tmp_path / "in.jsonl", [
        chat("fine"), "{not json", [1, 2], {"model": "fake"}, "", chat("also fine"),
    ])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl")
    assert proc.returncode == 1, proc.stderr
    out = {r["line"]: r for r in records(tmp_path / "out.jsonl")}
    assert sorted(out) == [1, 2, 3, 4, 6]  # the blank line 5 is skipped
    assert out[1]["ok"] and out[6]["ok"]
    for line in (2, 3, 4):
        assert out[line]["error"]["kind"] == "invalid_input"
        assert f"line {line}" in out[line]["error"]["message"]
    assert "invalid_input 3" in proc.stdout


def test_fallback_to_a_second_model(tmp_path: Path) -> None:
    """A line whose model keeps failing is retried, then answered by --fallback-model; the
    record says which model answered and the summary counts the fallback and the retry."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("hi", model="fake-fail")])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--retries", "1",
                    "--fallback-model", "fake")
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path / "out.jsonl")
    assert rec["ok"] and rec["model"] == "fake" and rec["fallback"]
    assert rec["attempts"] == 3 and rec["retries"] == 1
    assert "1 retries, 1 fallbacks" in proc.stdout


def test_failed_lines_exit_1_with_the_error_kind(tmp_path: Path) -> None:
    """When every model fails, the record carries the classified error and the exit code is 1."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b", model="fake-429")])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--retries", "0")
    assert proc.returncode == 1, proc.stderr
    ok, failed = records(tmp_path / "out.jsonl")
    assert ok["ok"] and not failed["ok"]
    assert failed["error"]["kind"] == "rate_limited" and "429" in failed["error"]["message"]


def test_usage_errors_exit_2_naming_the_problem(tmp_path: Path) -> None:
    """Bad options and inputs exit 2 with a message naming the option or file, before any call."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a")])
    cases = [
        (["missing.jsonl", "-o", "o.jsonl"], "missing.jsonl"),
        ([str(src), "-o", "o.jsonl", "--rpm", "0"], "--rpm: must be > 0"),
        ([str(src), "-o", "o.jsonl", "--tpm", "1.5"], "--tpm: expected an integer"),
        ([str(src), "-o", "o.jsonl", "--rpm", "60", "--burst", "2"], "burst must be"),
        ([str(src), "-o", "o.jsonl", "--concurrency", "-3"], "--concurrency: must be > 0"),
        ([str(src), "-o", "o.jsonl", "--timeout", "nan"], "--timeout: must be > 0"),
        ([str(src), "-o", "o.jsonl", "--retries", "two"], "--retries: expected an integer"),
        ([str(src)], "--output"),
        ([str(src), "-o", "no/such/dir/o.jsonl"], "does not exist"),
        ([str(src), "-o", "o.jsonl", "--retry-failed"], "--retry-failed needs --resume"),
    ]
    for args, message in cases:
        proc = llmguard(tmp_path, "run", *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    (tmp_path / "o.jsonl").write_text('{"id": "line-1", "line": 1}\n')
    proc = llmguard(tmp_path, "run", str(src), "-o", "o.jsonl")
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr


def test_resume_after_kill_does_no_line_twice(tmp_path: Path) -> None:
    """Killed (SIGKILL) mid-run, a --resume run skips the recorded lines, does the rest once,
    keeps the first run's records untouched and leaves the file in input order."""
    lines = [chat(f"q{i}") for i in range(10)]
    lines[5]["model"] = "fake-hang"  # the first run never gets past line 6
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = spawn(tmp_path, "run", str(src), "-o", "out.jsonl", "--concurrency", "1", "-v")
    wait_for_records(proc, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = (tmp_path / "out.jsonl").read_text()
    assert [r["line"] for r in records(tmp_path / "out.jsonl")] == [1, 2, 3, 4, 5]

    again = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--resume", "--model", "fake")
    assert again.returncode == 0, again.stderr
    assert "5 done: 5 ok" in again.stdout and "5 already done" in again.stdout
    assert (tmp_path / "out.jsonl").read_text().startswith(before)
    out = records(tmp_path / "out.jsonl")
    assert [r["line"] for r in out] == list(range(1, 11))
    assert len({r["id"] for r in out}) == 10


def test_resume_cuts_a_torn_last_line(tmp_path: Path) -> None:
    """A record torn by a kill mid-write is dropped on --resume and its line is done again."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b")])
    assert llmguard(tmp_path, "run", str(src), "-o", "out.jsonl").returncode == 0
    first = (tmp_path / "out.jsonl").read_text().splitlines(keepends=True)[0]
    (tmp_path / "out.jsonl").write_text(first + '{"id": "line-2", "li')
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in records(tmp_path / "out.jsonl")] == ["line-1", "line-2"]


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    """Ctrl-C writes every finished line (even those held for ordering), exits 130 and prints a
    resume command; running it finishes the file in input order with each line once."""
    lines = [chat(f"q{i}") for i in range(6)]
    lines[1]["model"] = "fake-hang"
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = spawn(tmp_path, "run", str(src), "-o", "out.jsonl", "--concurrency", "2",
                 "--grace", "0", "-v")
    wait_for_records(proc, 5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130, stderr
    assert sorted(r["line"] for r in records(tmp_path / "out.jsonl")) == [1, 3, 4, 5, 6]
    command = stderr.split("Resume with:")[1].strip().splitlines()[0]
    assert command.startswith("llmguard run ") and command.endswith("--resume")

    again = llmguard(tmp_path, *shlex.split(command)[1:], "--model", "fake")
    assert again.returncode == 0, again.stderr
    assert [r["line"] for r in records(tmp_path / "out.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_api_base_sends_to_an_openai_compatible_server(tmp_path: Path) -> None:
    """--api-base posts each request to {base}/chat/completions with the bearer key; a 429 with
    Retry-After is retried and the record counts the attempts."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers["Authorization"], body))
            first = sum(b == body for _, _, b in seen) == 1
            status, reply = (429, {"error": {"message": "Rate limit reached"}}) if first else (
                200, {"id": "c1", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if first:
                self.send_header("retry-after", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b")])
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        proc = subprocess.run(
            [sys.executable, "-m", "llmguard", "run", str(src), "-o", "out.jsonl",
             "--model", "local-model", "--api-base", base],
            cwd=tmp_path, env={**_env(), "OPENAI_API_KEY": "sk-test"}, capture_output=True,
            text=True, timeout=HANG_GUARD,
        )
    finally:
        server.shutdown()
        server.server_close()  # the listening socket too: a later test must not see it leak
    assert proc.returncode == 0, proc.stderr
    out = records(tmp_path / "out.jsonl")
    assert [(r["ok"], r["attempts"], r["retries"]) for r in out] == [(True, 2, 1)] * 2
    assert out[0]["response"]["choices"][0]["message"]["content"] == "hi"
    assert {(path, auth) for path, auth, _ in seen} == {("/v1/chat/completions", "Bearer sk-test")}
    assert all(body["model"] == "local-model" for _, _, body in seen)


def test_writer_writes_at_once_and_restores_order_on_completion(tmp_path: Path) -> None:
    """Every record is on disk the moment it is written (nothing held behind a slow line); a
    completed run's close puts the file in input order."""
    from llmguard._cli.io import OutputWriter

    path = tmp_path / "out.jsonl"
    writer = OutputWriter(str(path), ordered=True, append=False)
    for index in (2, 0, 1):
        writer.write(index, {"id": f"x{index}", "line": index + 1})
        assert len(path.read_text().splitlines()) == [2, 0, 1].index(index) + 1
    writer.close(complete=True)
    assert [r["line"] for r in records(path)] == [1, 2, 3]


def test_priority_field_serves_higher_first(tmp_path: Path) -> None:
    """With one slot, lines waiting for it are served highest --priority-field first."""
    lines = [chat(f"q{i}", prio=i) for i in range(4)]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--concurrency", "1",
                    "--unordered", "--priority-field", "prio")
    assert proc.returncode == 0, proc.stderr
    assert [r["line"] for r in records(tmp_path / "out.jsonl")] == [1, 4, 3, 2]


def test_cache_answers_repeated_requests(tmp_path: Path) -> None:
    """With --cache-ttl an identical request is answered without reaching the model again."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("same"), chat("same"), chat("other")])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--cache-ttl", "60")
    assert proc.returncode == 0, proc.stderr
    out = records(tmp_path / "out.jsonl")
    assert [r["cached"] for r in out] == [False, True, False]
    assert out[1]["attempts"] == 0 and out[1]["response"] == out[0]["response"]
    assert "1 cache hits" in proc.stdout


def test_other_models_go_through_litellm_with_cost(tmp_path: Path) -> None:
    """A model that is not a fake goes through litellm (here its offline `mock_response`), and
    the record carries the cost litellm prices it at."""
    line = chat("hi", model="gpt-4o-mini", mock_response="hello there")
    src = write_jsonl(tmp_path / "in.jsonl", [line])
    proc = subprocess.run(
        [sys.executable, "-m", "llmguard", "run", str(src), "-o", "out.jsonl"], cwd=tmp_path,
        env={**_env(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}, capture_output=True, text=True,
        timeout=HANG_GUARD,
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path / "out.jsonl")
    assert rec["model"] == "gpt-4o-mini"
    assert rec["response"]["choices"][0]["message"]["content"] == "hello there"
    assert rec["cost"] > 0 and "cost        $0.0000" in proc.stdout


def test_resume_retry_failed_redoes_only_the_failed_lines(tmp_path: Path) -> None:
    """--resume --retry-failed drops the error records and runs those lines again; successful
    lines are kept as they were."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b", model="fake-fail"), chat("c")])
    assert llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--retries", "0").returncode == 1
    first = records(tmp_path / "out.jsonl")
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--resume", "--retry-failed",
                    "--fallback-model", "fake", "--retries", "0")
    assert proc.returncode == 0, proc.stderr
    out = records(tmp_path / "out.jsonl")
    assert [r["ok"] for r in out] == [True, True, True]
    assert out[0] == first[0] and out[2] == first[2] and out[1]["fallback"]


def test_summary_counts_percentiles_and_cost() -> None:
    """The summary adds up outcomes, tokens and cost (cache hits spend none) and reports
    nearest-rank percentiles of the provider latency."""
    from llmguard._cli.report import Tally, format_summary, percentile

    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0], 99) == 2.0
    tally = Tally(skipped=2)
    base = {"ok": True, "error": None, "latency": 0.5, "elapsed": 1.0, "retries": 1,
            "fallback": False, "cached": False, "cost": 0.25,
            "usage": {"input_tokens": 10, "output_tokens": 5}}
    tally.add(base)
    tally.add({**base, "cached": True, "retries": 0})
    tally.add({**base, "ok": False, "error": {"kind": "timeout"}, "fallback": True, "cost": None,
               "usage": None})
    tally.add({**base, "ok": False, "error": {"kind": "invalid_input"}, "latency": None,
               "elapsed": None})
    assert (tally.done, tally.ok, tally.failed) == (4, 2, 2)
    assert (tally.retries, tally.fallbacks, tally.cached) == (2, 1, 1)
    assert (tally.input_tokens, tally.output_tokens, tally.cost) == (10, 5, 0.25)
    text = format_summary(tally, 2.0, source="in", output="out")
    assert "4 done: 2 ok, 2 failed; 2 already done (resumed)" in text
    assert "$0.250000" in text and "2 retries, 1 fallbacks, 1 cache hits" in text


def test_quota_used_counts_the_busiest_window_not_the_average_rate() -> None:
    """2,400 requests in 80 s against a fixed window of rpm 1,200 started at :40: 800, 1,199
    and 401 in three clock minutes. The average (1,800 a minute, "150%") read like an overrun;
    the summary says what the server counted: 1,199 in the busiest clock minute (100%);
    under any other shape, what the busiest 60 s held (which a sliding window would count)."""
    from collections import Counter

    from llmguard._cli.report import Tally, quota_used

    sent: Counter[int] = Counter()
    for second, n in ((40, 800), (60, 1199), (120, 401)):
        for i in range(20):  # spread over 20 s from each start
            sent[6_000_000 + second + i] += n // 20 + (i < n % 20)
    assert sum(sent.values()) == 2400

    class Inner:
        def __init__(self, shape: str) -> None:
            self.shape = shape

        def statistics(self) -> Any:
            return self

    class Limits:
        rpm, tpm, source = 1200, None, "--rpm/--tpm"

        def __init__(self, shape: str) -> None:
            self.inner = Inner(shape)

    fixed = quota_used(Limits("fixed (a reason)"), sent, Tally(), 80.0)
    assert fixed == "1,199 requests in the busiest clock minute of rpm 1,200 (100%) [--rpm/--tpm]"
    sliding = quota_used(Limits("sliding (a reason)"), sent, Tally(), 80.0)  # :40-:79 of it
    assert sliding is not None and sliding.startswith("1,999 requests in the busiest 60 s")


def test_timeout_ends_a_hung_call_as_a_timeout_record(tmp_path: Path) -> None:
    """--timeout bounds each attempt: a model that never answers becomes a timeout record."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a", model="fake-hang"), chat("b")])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--timeout", "0.1",
                    "--retries", "0")
    assert proc.returncode == 1, proc.stderr
    hung, ok = records(tmp_path / "out.jsonl")
    assert hung["error"]["kind"] == "timeout" and ok["ok"]


def test_adaptive_concurrency_runs_the_file(tmp_path: Path) -> None:
    """--adaptive replaces the fixed limit with adaptive concurrency; every line still succeeds."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat(f"q{i}") for i in range(20)])
    proc = llmguard(tmp_path, "run", str(src), "-o", "out.jsonl", "--adaptive")
    assert proc.returncode == 0, proc.stderr
    assert [r["line"] for r in records(tmp_path / "out.jsonl")] == list(range(1, 21))


def test_metrics_port_serves_prometheus_while_running(tmp_path: Path) -> None:
    """--metrics-port serves the pipeline's metrics in Prometheus format during the run,
    including the gauges of the layers around Metrics (the CLI builds its handler through
    Pipeline.build, which wires Metrics to its neighbours, like a wrapped pipeline)."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b"), chat("c", model="fake-hang")])
    proc = spawn(tmp_path, "run", str(src), "-o", "out.jsonl", "--metrics-port", str(port),
                 "--grace", "0", "-v")
    try:
        wait_for_records(proc, 2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
            body = resp.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=HANG_GUARD)
    assert "gen_ai_client_operation_duration" in body
    assert "llmguard_concurrency_limit" in body and 'llmguard_layer="concurrency_limit"' in body


def test_input_and_output_checks_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    """-o DIR, an unwritable output, --api-base not a URL or without --model, duplicate ids
    (naming the lines) and an output that is the input through a symlink are usage errors."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), {"custom_id": "x", "body": chat("b")},
                                              {"custom_id": "x", "body": chat("c")}])
    ok_src = write_jsonl(tmp_path / "ok.jsonl", [chat("a")])
    (tmp_path / "d").mkdir()
    (tmp_path / "ro").mkdir()
    os.symlink(ok_src, tmp_path / "link.jsonl")
    cases = [
        ([str(src), "-o", "o.jsonl"], "'x' on lines 2, 3"),
        ([str(ok_src), "-o", "d"], "is a directory"),
        ([str(ok_src), "-o", "o.jsonl", "--api-base", "not-a-url", "--model", "m"],
         "--api-base must be an http(s) URL"),
        ([str(ok_src), "-o", "o.jsonl", "--api-base", "http://127.0.0.1:9/v1"],
         "--api-base needs --model"),
        ([str(ok_src), "-o", "link.jsonl", "--overwrite"], "OUTPUT must differ from INPUT"),
        ([str(ok_src), "-o", "-", "--resume"], "--resume needs an output file"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(tmp_path / "ro", 0o500)
        cases.append(([str(ok_src), "-o", "ro/o.jsonl"], "cannot write output"))
    for args, message in cases:
        proc = llmguard(tmp_path, "run", *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert ok_src.read_text().strip()  # the input survived


def test_bom_crlf_input_and_stdout_output(tmp_path: Path) -> None:
    """A UTF-8 BOM and CRLF line ends are accepted; -o - writes the records (in order) to
    stdout and the summary to stderr, creating no file named '-'."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(chat(f"q{i}")).encode() + b"\r\n"
                                                for i in range(3)))
    proc = llmguard(tmp_path, "run", str(src), "-o", "-")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in out] == [1, 2, 3] and all(r["ok"] for r in out)
    assert "lines" in proc.stderr and not (tmp_path / "-").exists()


def test_resume_with_failed_records_left_exits_1_naming_retry_failed(tmp_path: Path) -> None:
    """--resume that leaves an earlier run's error records in OUTPUT exits 1 and says
    --retry-failed."""
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b", model="fake-fail")])
    assert llmguard(tmp_path, "run", str(src), "-o", "o.jsonl", "--retries", "0").returncode == 1
    proc = llmguard(tmp_path, "run", str(src), "-o", "o.jsonl", "--resume")
    assert proc.returncode == 1 and "--retry-failed" in proc.stderr, proc.stderr


def test_api_key_flags_are_used_and_never_printed(tmp_path: Path) -> None:
    """--api-key-env NAME reads the key from NAME; the resume hint never shows a --api-key."""
    from llmguard._cli.report import resume_args

    assert "sk-live" not in resume_args(["in", "-o", "o", "--api-key", "sk-live"])
    assert "sk-live" not in resume_args(["in", "-o", "o", "--api-key=sk-live"])
    proc = llmguard(tmp_path, "run", "--help")
    assert "--api-key-env" in proc.stdout and "OPENAI_API_KEY" in proc.stdout
