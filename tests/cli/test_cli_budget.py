"""`llmguard run --max-cost`: stop sending before the cap, report what was not sent, resume it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_cli import chat, llmguard, records, write_jsonl

from llmguard._cli.budget_options import make_budget, price_type


def lines(n: int) -> list[dict[str, object]]:
    return [{"custom_id": f"r{i}", "body": chat(f"question {i} about things", max_tokens=20)}
            for i in range(n)]


def test_max_cost_stops_sending_and_resume_continues_with_a_new_cap(tmp_path: Path) -> None:
    """The run stops sending once the next line could pass --max-cost: exit 4, the spend (the
    records' costs) within the cap, no line failed, the summary says what was spent and how many
    lines were not sent; --resume with a new cap does exactly those, each id once in all."""
    source = write_jsonl(tmp_path / "in.jsonl", lines(200))
    first = llmguard(tmp_path, "run", "in.jsonl", "-o", "out.jsonl", "--max-cost", "0.001",
                     "--price", "1,2", "--no-progress")
    assert first.returncode == 4, first.stderr
    done = records(tmp_path / "out.jsonl")
    assert done and all(r["ok"] for r in done) and len(done) < 200
    spent = sum(r["cost"] for r in done)
    assert 0.0009 <= spent <= 0.001
    assert f"{200 - len(done)} lines not sent" in first.stdout
    assert "stopped at --max-cost" in first.stderr and "--resume --max-cost USD" in first.stderr
    assert "--max-cost 0.001" not in first.stderr.split("Continue")[1]
    second = llmguard(tmp_path, "run", "in.jsonl", "-o", "out.jsonl", "--max-cost", "1",
                      "--price", "1,2", "--no-progress", "--resume")
    assert second.returncode == 0, second.stderr
    ids = [r["id"] for r in records(tmp_path / "out.jsonl")]
    assert sorted(ids) == sorted(json.loads(x)["custom_id"] for x in
                                 source.read_text().splitlines())
    assert "0 lines not sent" in second.stdout


def test_max_cost_options_are_checked_before_anything_runs(tmp_path: Path) -> None:
    """--price alone, a malformed --price, a negative cap and an unpriced --model are usage
    errors (exit 2) that say what to pass; nothing is written."""
    write_jsonl(tmp_path / "in.jsonl", lines(3))
    cases = [
        (["--price", "1,2"], "--price prices the calls for --max-cost"),
        (["--max-cost", "1", "--price", "1"], "expected IN,OUT"),
        (["--max-cost", "-1"], "must be > 0"),
        (["--max-cost", "1", "--model", "fake"], "pass --price IN,OUT"),
        (["--max-cost", "1", "--ray"], "--max-cost does not go with --ray"),
    ]
    for extra, message in cases:
        done = llmguard(tmp_path, "run", "in.jsonl", "-o", "out.jsonl", *extra)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
        assert not (tmp_path / "out.jsonl").exists()


def test_price_takes_a_cached_input_price() -> None:
    """--price IN,OUT,CACHED gives every model a cached-input price; two or three numbers."""
    budget = make_budget(1.0, price_type("1,2,0.5"))
    usage = {"prompt_tokens": 100, "completion_tokens": 10,
             "prompt_tokens_details": {"cached_tokens": 60}}
    assert budget.cost("any", {"usage": usage}) == pytest.approx((40 + 30 + 20) / 1e6)
    with pytest.raises(argparse.ArgumentTypeError, match="IN,OUT"):
        price_type("1,2,3,4")
