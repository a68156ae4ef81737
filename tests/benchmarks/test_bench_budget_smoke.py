"""bench_budget runs end to end at a small size: every row, llmguard within the cap.

No wall-clock assertion; LiteLLM's rows and the hand-written baseline are only required to be
there (what they bill is what the benchmark measures, and may change with litellm's version).
LiteLLM's proxy is not started (it needs its own venv and database)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.looptime(False)

from bench_tables import number, row, run


def test_bench_budget_prints_every_row_and_llmguard_stays_within_the_cap() -> None:
    out = run("bench_budget.py", "--calls", "90", "--repeats", "1", "--delay", "0.05",
              "--no-litellm-proxy")
    for label in ("llmguard Budget", "llmguard gateway, tenant max_budget"):
        guarded = row(out, label)
        assert number(guarded[0]) + number(guarded[1]) == 90, out
        assert 0.8 <= number(guarded[2]) <= 1.0 and guarded[4] == "1 of 1", out
    for label in ("hand-written check-then-record", "LiteLLM Router provider budget"):
        theirs = row(out, label)
        assert number(theirs[0]) + number(theirs[1]) == 90, out
    assert row(out, "LiteLLM proxy key max_budget")[0] == "not run", out
    assert "not run (--no-litellm-proxy)" in out, out
