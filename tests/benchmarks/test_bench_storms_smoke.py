"""The injected-429 benchmark (benchmarks/bench_storms.py) runs: a small size, one seed."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_storms.py"


def test_bench_storms_runs_every_contender_under_each_injection() -> None:
    """1.5x the quota: a row for every contender on every shape under random 429s and a
    storm, each call accounted for; the default stack completes every call and is never idle
    with room for longer than an injected 429's pause (2 s; a random 429 at the tail of a
    minute's burst read as the limit idled it 56 s)."""
    spec = importlib.util.spec_from_file_location("benchmarks_bench_storms", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # (@dataclass looks its module up)
    spec.loader.exec_module(bench)
    rows = bench.compare(demand=1.5)
    contenders = bench.composition.MAIN
    assert {(r.server, r.injected, r.contender) for r in rows} == {
        (s, i, c) for s in bench.SHAPES for i in ("random", "storm") for c in contenders}
    assert all(r.completed + r.failed == r.calls and r.ideal > 10 for r in rows)
    defaults = [r for r in rows if r.contender == "llmguard (defaults)"]
    assert all(r.failed == 0 and r.longest_idle <= 2.0 for r in defaults), defaults
    assert all(c in bench.format_table(rows) for c in contenders)
