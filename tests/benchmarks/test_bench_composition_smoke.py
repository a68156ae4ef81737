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


def test_bench_composition_runs_every_contender_against_every_server() -> None:
    """1.5x the quota per cell, started 40 s into a minute, on its own virtual-time loop: a row
    for every contender on every server, each call accounted for as completed or failed, an
    ideal time of more than 10 s (the quota binds), and a table naming every contender; the
    default stack completes every call with at most one 429 per server."""
    bench = load_bench()
    rows = bench.compare(demand=1.5, repeats=1, phases=(40.0,))
    assert {(r.server, r.contender) for r in rows} == {
        (server, contender) for server in bench.SERVERS for contender in bench.MAIN}
    assert all(r.completed + r.failed == r.calls and r.ideal > 10 for r in rows)
    defaults = [r for r in rows if r.contender == "llmguard (defaults)"]
    assert all(r.failed == 0 and r.rate_limited <= 1 for r in defaults)
    table = bench.format_table(rows)
    assert all(contender in table for contender in bench.MAIN)
    # the slots bound: the contender's own calls in flight at most (none for aiolimiter's)
    assert all((r.slots_bound > 0) == (r.contender != "tenacity + aiolimiter") for r in rows)
    assert all(r.slots_bound >= r.quota_bound - 1e-6 for r in rows if r.slots_bound)


def test_bench_composition_late_start_is_the_slots_bound() -> None:
    """Started at :58 on the fixed window, 3x the quota: the default stack's 32 calls in flight,
    answered 2 s later, are all the first minute takes, and three minutes' quota needs a
    fourth: about twice the server's ideal, and within 1.05x of the soonest 32 in flight allow
    (read as a defect of RateLimit's once: it is the README stack's ConcurrencyLimit(32))."""
    bench = load_bench()
    [row] = bench.compare(demand=3, repeats=1, phases=(58.0,),
                          contenders=("llmguard (defaults)",), servers=("fixed window",))
    assert row.rate_limited == 0 and row.failed == 0
    assert row.ratio > 1.5
    assert row.wall <= 1.05 * row.slots_bound, (row.wall, row.slots_bound)


def test_bench_composition_cold_network_table() -> None:
    """The cold-network table: the default stack (its margin measured) completes every call
    with at most one 429 per server, next to the former constant margin."""
    bench = load_bench()
    rows = bench.compare_cold(demand=1.5)
    assert {r.contender for r in rows} == {"llmguard (defaults)",
                                           "llmguard, margin=0.5 (the former default)"}
    defaults = [r for r in rows if r.contender == "llmguard (defaults)"]
    assert len(defaults) == len(bench.SERVERS)
    assert all(r.failed == 0 and r.rate_limited <= 1 for r in defaults)


def test_bench_composition_tight_table() -> None:
    """The tight table (10,000 TPM, each request charged exactly our estimate): the default
    stack completes every call with at most one 429 per quota on every server."""
    bench = load_bench()
    rows = bench.compare_tight(demand=1.5, phases=(50.0,))
    assert len(rows) == len(bench.SERVERS) and bench.SCENARIO["tpm"] is None
    assert all(r.failed == 0 and r.completed == r.calls and r.rate_limited <= 2 for r in rows)


def test_bench_composition_input_output_rows() -> None:
    """A row for each input/output server (Anthropic's buckets or a gateway's clock minute,
    giving unused output back or not, headers sent or not): the default stack completes every
    call, with no 429 when it reads headers and at most one per thing learned without them
    (the shape, whether output is given back)."""
    bench = load_bench()
    rows = bench.compare_input_output(demand=1.5, phases=(40.0,))
    assert len(rows) == len(bench.IO_SERVERS)
    assert all(r.failed == 0 and r.completed == r.calls for r in rows)
    assert all(r.rate_limited == 0 for r in rows if "no headers" not in r.server)
    assert all(r.rate_limited <= 2 for r in rows)


def test_bench_composition_cold_ideal_starts_where_a_request_can_arrive() -> None:
    """Started at :59.5 on the cold network, the opening burst's 0.8 s way puts every first
    arrival past the minute's turn: the ideal and its bounds count from there (the first
    minute's quota, which nothing could reach, had the proxies at 1.49x and 1.21x "of the
    ideal" where the client does the soonest possible), and the phase prints as given."""
    bench = load_bench()
    rows = bench.compare_cold(demand=3, phases=(59.5,), contenders=("llmguard (defaults)",))
    proxies = [r for r in rows if "proxy" in r.server]
    assert len(proxies) == 2 and all(r.ratio <= 1.02 for r in proxies), proxies
    assert all(r.ideal >= r.quota_bound >= bench.COLD for r in rows)
    assert "| :59.5 |" in bench.format_table(rows)


def test_bench_composition_strict_both_ways() -> None:
    """``--both-ways``: the strict servers' answers come back 0-10 ms late too (their
    ``send_latency`` set, the scenario restored after), and every call still completes."""
    bench = load_bench()
    rows = bench.compare_strict(demand=1.5, phases=(50.0,), both_ways=True)
    assert len(rows) == len(bench.SERVERS) and not bench.SCENARIO["both_ways"]
    assert all(r.failed == 0 and r.completed == r.calls for r in rows)


def test_bench_composition_every_table_both_ways() -> None:
    """``--both-ways`` under the tight, first (input/output rows with it) and cold tables: 0-10
    ms each way (the cold network's seconds plus them), the scenario restored after, every
    call of the default stack done; the input/output servers, whose answers' readings come
    back shuffled, with no 429 when their headers are read."""
    bench = load_bench()
    tight = bench.compare_tight(demand=1.5, phases=(50.0,), both_ways=True)
    first = bench.compare_main(demand=1.5, phases=(40.0,), both_ways=True)
    cold = bench.compare_cold(demand=1.5, contenders=("llmguard (defaults)",), both_ways=True)
    assert bench.SCENARIO == {"tpm": None, "charge_factor": 1.0, "jitter": 0.0, "cold": False,
                              "both_ways": False}
    assert len(tight) == len(cold) == len(bench.SERVERS)
    assert len(first) == len(bench.SERVERS) * len(bench.MAIN) + len(bench.IO_SERVERS)
    assert all(r.failed == 0 and r.completed == r.calls for r in tight + first + cold
               if r.contender == "llmguard (defaults)")
    assert all(r.rate_limited == 0 for r in first
               if r.server.startswith("input/output") and "no headers" not in r.server)
