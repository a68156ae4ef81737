"""Running a benchmark script and reading its tables (shared by the benchmark smoke tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str, timeout: float = 600) -> str:
    """The stdout of ``benchmarks/<script> args`` (which must exit 0)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def row(out: str, label: str) -> list[str]:
    """The cells after the first of the first table row whose first cell starts with
    ``label``."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label):
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{out}")


def number(cell: str) -> float:
    """A table cell as a number (thousands separators allowed)."""
    cell = cell.replace(",", "")
    assert re.fullmatch(r"-?\d+(\.\d+)?", cell), f"not a number: {cell!r}"
    return float(cell)
