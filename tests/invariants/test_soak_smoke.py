"""The soak benchmark (benchmarks/soak.py) runs: a few virtual minutes at a small load."""

import asyncio
import importlib.util
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def load_soak():
    # benchmarks/ is not a package; the module is registered because @dataclass looks it up.
    spec = importlib.util.spec_from_file_location("benchmarks_soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_soak_completes_calls_and_leaves_no_task_behind() -> None:
    """Three virtual minutes at 5 calls/s through the full pipeline: one row a minute, every
    row with completed calls and throughput near the arrival rate, nothing shed, and when it
    returns no task it started is still pending."""
    soak = load_soak()
    rows = await soak.soak(minutes=3, rate=5, report_every=60)
    assert [row.minute for row in rows] == [1, 2, 3]
    assert all(row.completed > 0 and row.shed == 0 for row in rows)
    assert sum(row.ok for row in rows) > 0.9 * 3 * 60 * 5
    assert rows[-1].cache_size > 0 and rows[-1].limiter_keys > 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert soak.format_row(rows[0]) and "throughput" in soak.verdict(rows)
