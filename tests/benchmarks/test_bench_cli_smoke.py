"""bench_cli runs end to end at a tiny size: every server with llmguard and the cookbook (the
other clients are the same code with other options), the interrupt and kill rows, and the note
saying whether LiteLLM's proxy ran.

No wall-clock assertion: only that the script finishes, every line is done on every server, and
the counts taken at the server hold (a SIGINT pays nothing twice; a kill at most the lines in
flight, bounded by --concurrency 64).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.looptime(False)

from bench_tables import number, row, run


def test_bench_cli_prints_every_server_client_and_stop_row() -> None:
    out = run("bench_cli.py", "--requests", "240", "--clients", "llmguard,cookbook")
    for server in ("sliding window", "token bucket", "fixed window"):
        for client in ("llmguard run", "cookbook, 100% quota"):
            cells = next(line for line in out.splitlines()
                         if line.startswith(f"| {server} | {client} |")).split("|")[3:-1]
            assert number(cells[0].strip()) == 240, out
    sigint = row(out, "SIGINT at 1/3")
    assert number(sigint[0]) == 240 and number(sigint[4]) == 0, out  # done; duplicates paid
    kill = row(out, "SIGKILL at 1/3")
    assert number(kill[0]) == 240 and 0 <= number(kill[4]) <= 64, out
    assert "LiteLLM's proxy: not run" in out or "LiteLLM proxy (real time)" in out
