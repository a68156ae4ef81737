"""bench_router.py runs end to end at a small size: llmguard's rows in every scenario (virtual
time) and one LiteLLM row (real time, over loopback HTTP)."""

from bench_tables import number, run


def cells(out: str, scenario: str, client: str) -> list[str]:
    """The done, failed, 429s and wall/ideal cells of one row of the table."""
    for line in out.splitlines():
        found = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and found[:2] == [scenario, client]:
            return found[2:]
    raise AssertionError(f"no row {scenario} | {client} in:\n{out}")


def test_bench_router_prints_every_scenario() -> None:
    out = run("bench_router.py", "--seconds", "20", "--contenders", "llmguard")
    for scenario in ("quotas", "one down 30 s", "learned"):
        done, failed, rate_limited, ratio = cells(out, scenario, "llmguard")
        assert number(done) == 480 and number(failed) == 0
        assert rate_limited == "0.0%"
        assert 0.9 < number(ratio) <= 1.1


def test_bench_router_runs_litellm_against_the_same_servers() -> None:
    out = run("bench_router.py", "--seconds", "2", "--scenarios", "quotas",
              "--contenders", "litellm simple-shuffle")
    done, failed, _, _ = cells(out, "quotas", "litellm simple-shuffle")
    assert number(done) + number(failed) == 48
