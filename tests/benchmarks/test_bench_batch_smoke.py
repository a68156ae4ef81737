"""The batch benchmark runs end to end at a tiny size and prints a figure for every runner.

No wall-clock assertion: only that every contender (the "+ stack" memory rows of #36 included)
finishes all its items and reports a rate and a peak RSS.
"""

from bench_tables import number, run

RUNNERS = ("llmguard.batch_iter", "gather+Semaphore", "aiometer.amap", "lg.batch + stack",
           "lg.batch + stack, keep_records", "lg.batch_iter + stack", "aiometer.amap + stack")


def test_bench_batch_prints_every_runner() -> None:
    out = run("bench_batch.py", "--sizes", "200")
    lines = {line[:32].strip(): line[32:].split() for line in out.splitlines()[1:]
             if not line.startswith("targets")}
    assert set(lines) == set(RUNNERS), out
    for cells in lines.values():
        items, rate, _, rss = cells[:4]
        assert number(items) == 200 and number(rate) > 0 and number(rss) > 0
