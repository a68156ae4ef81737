"""bench_adaptive.py runs end to end at a tiny size and prints its target table and scenarios.

No figure is asserted (30 simulated seconds are mostly ramp-up): only that the script finishes
and every row the team reads is there with numbers and a verdict.
"""

import re

from bench_tables import run


def test_bench_adaptive_prints_the_target_table_and_every_contender() -> None:
    out = run("bench_adaptive.py", "--capacities", "4,16", "--duration", "30")
    target = out[out.index("Target of #21 item 15"):out.index("\ncapacity 4,")]
    for shape in ("queueing", "noise", "noise 1-3 s", "step x3", "429 past C"):
        for capacity in ("4", "16"):
            line = next(line for line in target.splitlines()
                        if line.startswith(f"| {shape} | {capacity} |"))
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            assert all(re.fullmatch(r"\d+(\.\d+)?", cell) for cell in cells[1:9]), line
            assert cells[9] in ("pass", "MISS"), line
    for label in ("static 8 (too low)", "static 16 (right)", "adaptive gradient",
                  "adaptive gradient2", "adaptive vegas", "adaptive aimd", "seed batch scheme"):
        assert out.count(f"| {label} |") >= 3, label  # capacity 16, the change, the lengths
    assert "recover@C s" in out
