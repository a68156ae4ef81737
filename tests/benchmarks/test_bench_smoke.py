"""The stack and fan-out benchmarks run end to end at the tiniest sizes and print every row.

No wall-clock assertion: only that each script finishes and its tables have the rows the team
reads (a contender, layer or limiter that fails or vanishes breaks this test, not a figure).
"""

import re

from bench_tables import number, row, run


def test_bench_stack_prints_every_contender_layer_and_target() -> None:
    """Every contender has seq and gather figures (hits too, except LiteLLM's Router, which
    runs without a cache), every layer its row, both limiters a bytes-per-waiter row, and each
    target of #22 and #36 a pass/MISS verdict."""
    out = run("bench_stack.py", "--calls", "20", "--concurrent", "20", "--hits", "20",
              "--repeats", "1", "--waiters", "50", "--import-runs", "1", "--litellm-calls", "2")
    for label in ("bare await", "hand-written (seed documents)",
                  "tenacity+aiolimiter+Semaphore+TTLCache", "+ 3 OTel SDK instruments",
                  "llmguard 8-layer stack", "+ OTel SDK MeterProvider", "LiteLLM Router"):
        cells = row(out, label)
        number(cells[0]), number(cells[3])  # seq us, gather us
        if not label.startswith(("bare", "LiteLLM")):
            number(cells[6])  # hit us
    for label in ("empty Pipeline", "Metrics (global API", "Metrics (SDK", "Cache (miss)",
                  "Fallback", "Retry", "CircuitBreaker", "Timeout", "RateLimit(rpm",
                  "ConcurrencyLimit(100)", "AdaptiveConcurrency"):
        cells = row(out, label)
        number(cells[1]), number(cells[3])  # over bare, seq and gather
    for label in ("ConcurrencyLimit(1) layer", "RateLimit(rpm=1) layer"):
        assert number(row(out, label)[0]) > 0
    targets = out[out.index("Targets ("):]
    for target in ("no SDK, seq", "no SDK, gather", "+ SDK, seq", "+ SDK, gather", "hit path",
                   "cache miss", "every layer", "waiter memory", "import llmguard <"):
        line = next(line for line in targets.splitlines() if target in line)
        assert re.search(r"\b(pass|MISS)\b", line), line


def test_bench_fanout_prints_every_limiter_and_cancellation_order() -> None:
    """Each limiter has enqueue, drain and memory figures, and a row per cancellation order in
    which every waiter was cancelled; each llmguard limiter gets a verdict."""
    out = run("bench_fanout.py", "--waiters", "20", "--repeats", "1", "--budget", "30")
    limiters = ("lg.ConcurrencyLimiter(1)", "ConcurrencyLimit(1) layer", "RateLimit layer",
                "asyncio.Semaphore(1)")
    for label in limiters:
        cells = row(out, label)
        assert number(cells[0]) > 0 and number(cells[1]) > 0 and number(cells[2]) > 0
    cancellation = out[out.index("Cancelling all"):]
    for label in limiters:
        orders = [line for line in cancellation.splitlines() if line.startswith(f"| {label}")]
        assert [row(line, label)[0] for line in orders] == ["FIFO", "LIFO", "random"]
        assert all(row(line, label)[1] == "20" for line in orders)
    verdicts = out[out.index("Target of #21"):]
    for label in limiters[:3]:
        assert re.search(rf"{re.escape(label)}.*\b(pass|MISS)\b", verdicts), verdicts


def test_bench_adapters_prints_each_limiter_and_store() -> None:
    """aiolimiter as a layer beside RateLimit, cachetools stores beside the in-memory one: each
    row has a figure and a ratio to llmguard's own part."""
    out = run("bench_adapters.py", "--calls", "50", "--repeats", "1")
    for label in ("lg.RateLimit(rpm=...)", "aiolimiter.AsyncLimiter as a layer",
                  "lg.Cache, in-memory store", "lg.Cache, cachetools.TTLCache store",
                  "lg.Cache, cachetools.LRUCache store"):
        cells = row(out, label)
        number(cells[0]), number(cells[1].rstrip("x"))


def test_callgrind_stack_runs_each_counted_contender_and_path() -> None:
    """What callgrind counts (``--inner``) runs for each stack row and, for llmguard's, each path;
    valgrind itself is left to the benchmark run (it takes minutes)."""
    for name in ("bare await send_message()", "tenacity+aiolimiter+Semaphore+TTLCache"):
        run("callgrind_stack.py", "--inner", name, "seq", "5", timeout=120)
    for path in ("seq", "gather", "hit"):
        run("callgrind_stack.py", "--inner", "llmguard 8-layer stack", path, "5", timeout=120)
