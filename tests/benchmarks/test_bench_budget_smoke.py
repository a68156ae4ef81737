"""bench_budget runs end to end at a small size: both rows, llmguard within the cap.

No wall-clock assertion; LiteLLM's row is only required to be there (what it bills is what the
benchmark measures, and may change with litellm's version)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.looptime(False)

from bench_tables import number, row, run


def test_bench_budget_prints_both_rows_and_llmguard_stays_within_the_cap() -> None:
    out = run("bench_budget.py", "--calls", "90", "--repeats", "1", "--delay", "0.05")
    guarded = row(out, "llmguard Budget")
    assert number(guarded[0]) + number(guarded[1]) == 90, out
    assert number(guarded[2]) <= 1.0 and guarded[4] == "1 of 1", out
    litellm = row(out, "LiteLLM Router provider budget")
    assert number(litellm[0]) + number(litellm[1]) == 90, out
