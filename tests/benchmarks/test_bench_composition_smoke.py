"""The composition benchmark (benchmarks/bench_composition.py) runs: a small size, one seed."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_composition.py"


def load_bench():
    # benchmarks/ is not a package; the module is registered because @dataclass looks it up.
    spec = importlib.util.spec_from_file_location("benchmarks_bench_composition", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_composition_runs_every_contender_against_both_servers() -> None:
    """90 calls (1.5x the quota) per cell on its own virtual-time loop: a row for every
    contender on every server, each call accounted for as completed or failed, an ideal time of
    more than 30 s (the quota binds), and a table naming every contender."""
    bench = load_bench()
    rows = bench.compare(calls=90, repeats=1)
    assert {(r.server, r.contender) for r in rows} == {
        (server, contender) for server in bench.SERVERS for contender in bench.CONTENDERS}
    assert all(r.completed + r.failed == 90 and r.ideal > 30 for r in rows)
    table = bench.format_table(rows)
    assert all(contender in table for contender in bench.CONTENDERS)
