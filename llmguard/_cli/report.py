"""What ``llmguard run`` tells its user: a live progress bar and the closing summary table."""

from __future__ import annotations

import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress", "Tally", "format_summary", "quota_used", "resume_args", "spend"]


class Tally:
    """Running totals over the records of one run (the summary table's numbers)."""

    __slots__ = (
        "cached",
        "cost",
        "cost_unknown",
        "elapsed",
        "fallbacks",
        "input_tokens",
        "latencies",
        "outcomes",
        "output_tokens",
        "retries",
        "skipped",
    )

    def __init__(self, skipped: int = 0) -> None:
        #: Records by outcome: ``ok`` or the error kind (``rate_limited``, ``invalid_input``...).
        self.outcomes: Counter[str] = Counter()
        #: Provider latency of every line's last attempt, and each line's total time in the
        #: pipeline (queueing, quota waits, retries and backoff included), for percentiles;
        #: packed doubles, 8 bytes a line.
        self.latencies = array("d")
        self.elapsed = array("d")
        self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        #: Successful provider answers whose cost is unknown (fake model, unpriced model).
        self.cost_unknown = 0
        self.retries = self.fallbacks = self.cached = 0
        #: Lines skipped because an earlier run (``--resume``) already recorded them.
        self.skipped = skipped

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    @property
    def failed(self) -> int:
        return self.done - self.ok

    def add(self, record: dict[str, Any]) -> None:
        self.outcomes["ok" if record["ok"] else record["error"]["kind"]] += 1
        if record["elapsed"] is None:  # an invalid line never reached the pipeline
            return
        self.elapsed.append(record["elapsed"])
        if record["latency"] is not None:
            self.latencies.append(record["latency"])
        self.retries += record["retries"]
        self.fallbacks += record["fallback"]
        if record.get("cached"):
            self.cached += 1
            return  # a cache hit spent no tokens and no money
        usage = record.get("usage")
        if usage:
            self.input_tokens += usage["input_tokens"]
            self.output_tokens += usage["output_tokens"]
        if record["ok"]:
            if record.get("cost") is None:
                self.cost_unknown += 1
            else:
                self.cost += record["cost"]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def format_summary(tally: Tally, wall: float, *, source: str, output: str,
                   quota: str | None = None, abandoned: int = 0,
                   budget: str | None = None, deployments: str | None = None) -> str:
    """The closing table: counts by outcome, tokens, cost, latency percentiles, resilience."""
    lat, elapsed = sorted(tally.latencies), sorted(tally.elapsed)
    tokens = tally.input_tokens + tally.output_tokens
    per_min = tokens / wall * 60 if wall > 0 else 0.0
    outcomes = ", ".join(f"{kind} {n}" for kind, n in tally.outcomes.most_common()) or "none"
    if tally.cost_unknown == tally.ok:
        cost = "unknown (no priced model answered)"
    else:
        cost = f"${tally.cost:.6f}" + (
            f" (+ {tally.cost_unknown} answers of unknown price)" if tally.cost_unknown else ""
        )
    rows = [
        ("lines", f"{tally.done} done: {tally.ok} ok, {tally.failed} failed"
                  + (f"; {tally.skipped} already done (resumed)" if tally.skipped else "")),
        ("outcomes", outcomes),
        ("tokens", f"{tally.input_tokens:,} in + {tally.output_tokens:,} out"
                   f" = {tokens:,} ({per_min:,.0f}/min)"),
        ("cost", cost),
        ("latency", f"p50 {percentile(lat, 50):.3f} s, p99 {percentile(lat, 99):.3f} s "
                    "(provider, last attempt)"),
        ("per line", f"p50 {percentile(elapsed, 50):.3f} s, p99 {percentile(elapsed, 99):.3f} s "
                     "(with queueing, quota waits and retries)"),
        ("resilience", f"{tally.retries} retries, {tally.fallbacks} fallbacks, "
                       f"{tally.cached} cache hits"),
        ("wall time", f"{wall:.2f} s ({tally.done / wall if wall > 0 else 0:,.1f} lines/s)"),
    ]
    if quota is not None:
        rows.append(("quota used", quota))
    if deployments is not None:
        rows.append(("deployments", deployments))
    if budget is not None:
        rows.append(("budget", budget))
    if abandoned:
        rows.append(("abandoned", f"{abandoned} lines in flight at the provider when stopped "
                                  "(not recorded: --resume sends them again)"))
    width = max(len(name) for name, _ in rows)
    lines = [f"llmguard run: {source} -> {output}"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


class Progress:
    """A tqdm bar on stderr: lines recorded (the bar counts exactly the records written), ok,
    failed, tokens/min over the last :data:`WINDOW` seconds, lines at the provider vs waiting
    (for quota, a slot or a backoff). Silent when not a terminal or without tqdm.

    With ``verbose`` it also logs one line per finished record, for logs and pipes.
    """

    __slots__ = ("_bar", "_in_flight", "_queued", "_recent", "_stream", "_tally", "_verbose")

    #: Seconds of history behind the tokens/min figure.
    WINDOW = 60.0

    def __init__(self, tally: Tally, *, total: int | None, enabled: bool | None,
                 verbose: bool, stream: TextIO | None = None,
                 in_flight: Callable[[], int] = lambda: 0,
                 queued: Callable[[], int] = lambda: 0) -> None:
        self._stream = stream or sys.stderr
        self._tally = tally
        self._verbose = verbose
        self._in_flight, self._queued = in_flight, queued
        #: (time, tokens) of recent records, for the sliding tokens/min.
        self._recent: deque[tuple[float, int]] = deque()
        self._bar: Any = None
        if enabled is not False and (enabled or self._stream.isatty()):
            try:
                from tqdm import tqdm  # imported lazily: a progress bar is a CLI concern
            except ImportError:  # optional: the run goes on without a bar
                return
            self._bar = tqdm(total=total, unit="line", file=self._stream, dynamic_ncols=True,
                             smoothing=0.1, mininterval=0.2)

    def tokens_per_minute(self, now: float) -> float:
        """Tokens of the records of the last WINDOW seconds, per minute (over the time covered,
        at least 1 s, so the first records do not read as a huge rate)."""
        recent = self._recent
        while recent and recent[0][0] < now - self.WINDOW:
            recent.popleft()
        if not recent:
            return 0.0
        span = max(1.0, min(self.WINDOW, now - recent[0][0]))
        return sum(n for _, n in recent) / span * 60

    def update(self, record: dict[str, Any]) -> None:
        bar = self._bar
        if self._verbose:
            status = "ok" if record["ok"] else record["error"]["kind"]
            message = f"line {record['line']} {record['id']}: {status}"
            if bar is None:
                print(message, file=self._stream, flush=True)
            else:  # above the bar, not through it
                bar.write(message, file=self._stream)
        if bar is None:
            return
        now = time.monotonic()
        usage = record.get("usage") or {}
        self._recent.append((now, usage.get("input_tokens", 0) + usage.get("output_tokens", 0)))
        tally = self._tally
        bar.set_postfix_str(f"ok={tally.ok} failed={tally.failed} "
                            f"at-provider={self._in_flight()} waiting={max(0, self._queued())} "
                            f"tokens/min={self.tokens_per_minute(now):,.0f}", refresh=False)
        bar.update(1)  # after the postfix, so the refresh shows both

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def quota_used(limits: Any, sent: Counter[int], tally: Tally, wall: float) -> str | None:
    """How much of the quota the run used (None without quotas of its own: none, or a
    Router's, which ``deployments.routed`` tells): requests in the busiest clock minute under a
    learned fixed window, else in the busiest 60 s, against the rpm (a run that spans parts
    of several fixed windows averages more than the rpm a minute, within each one's quota);
    tokens a minute on average. ``sent``: attempts sent per wall-clock second."""
    if getattr(limits, "inner", None) is None or wall <= 0:
        return None
    parts = []
    if limits.rpm:
        fixed = limits.inner.statistics().shape.startswith("fixed")
        if fixed:
            minutes: Counter[int] = Counter()
            for second, n in sent.items():
                minutes[second // 60] += n
            busiest = max(minutes.values(), default=0)
        else:  # any 60 s, in steps of a second
            busiest = max((sum(sent.get(s, 0) for s in range(t - 59, t + 1)) for t in sent),
                          default=0)
        parts.append(f"{busiest:,} requests in the busiest {'clock minute' if fixed else '60 s'}"
                     f" of rpm {limits.rpm:,} ({busiest / limits.rpm:.0%})")
    if limits.tpm:
        rate = (tally.input_tokens + tally.output_tokens) / max(wall, 60.0) * 60
        parts.append(f"{rate:,.0f} tokens/min of tpm {limits.tpm:,} ({rate / limits.tpm:.0%})")
    return "; ".join(parts) + f" [{limits.source}]"


def spend(budget: Any, left: int) -> str | None:
    """What the run spent of --max-cost, and the lines not sent (None without a cap)."""
    if budget is None:
        return None
    stats = budget.statistics()
    return (f"${stats.spent_usd:.6f} spent of --max-cost ${stats.cap_usd:g}; "
            f"{left:,} lines not sent")


def resume_args(argv: list[str], *, new_cap: bool = False) -> str:
    """The command line that resumes this run (``new_cap``: without its --max-cost, which the
    user gives again)."""
    import shlex

    args: list[str] = []
    hide = drop = False
    for a in argv:
        if drop or a in ("--overwrite", "--resume") or (
                new_cap and a.startswith("--max-cost=")):
            drop = False
        elif new_cap and a == "--max-cost":
            drop = True  # and its value
        elif hide:  # a key never goes to the terminal: the user passes it again
            args.append("KEY")
        elif a.startswith("--api-key="):
            args.append("--api-key=KEY")
        else:
            args.append(a)
        hide = a == "--api-key"
    return shlex.join([*args, "--resume", *(["--max-cost", "USD"] if new_cap else [])])
