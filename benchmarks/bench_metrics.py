"""Per-call cost of the Metrics layer against the bare SDK floor and hand-written recording.

Run from the repository root: ``python benchmarks/bench_metrics.py`` (about 30 s).

(a) Metrics with no SDK configured (the API's no-op/proxy instruments)
(b) Metrics with the SDK (MeterProvider + InMemoryMetricReader)
(c) floor: the three histogram records the GenAI conventions require per call
    (duration, input tokens, output tokens), with prebuilt attribute dicts
(d) the usual hand-written recording: (c) plus a calls counter and an in-flight up-down counter

Each variant runs the same loop around the same handler; the loop's own cost (the handler alone)
is subtracted. Medians over repeats, interleaved so load drifts hit every variant alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, not an install

from llmguard import Call, Metrics
from llmguard._observability.metrics import DURATION_BUCKETS, TOKEN_BUCKETS

N = 20_000
REPEATS = 9
RESULT = {"usage": {"prompt_tokens": 120, "completion_tokens": 40}}
ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o"}
INPUT = {**ATTRS, "gen_ai.token.type": "input"}
OUTPUT = {**ATTRS, "gen_ai.token.type": "output"}


async def handler(call: Call) -> Any:
    return RESULT


def sdk_meter() -> Any:
    return MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")


def histograms(meter: Any) -> tuple[Any, Any]:
    return (meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                   explicit_bucket_boundaries_advisory=DURATION_BUCKETS),
            meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                   explicit_bucket_boundaries_advisory=TOKEN_BUCKETS))


def bare() -> Any:
    async def run(call: Call) -> None:
        for _ in range(N):
            await handler(call)
    return run


def layer(metrics: Metrics) -> Any:
    async def run(call: Call) -> None:
        for _ in range(N):
            await metrics(call, handler)
    return run


def floor() -> Any:
    duration, tokens = histograms(sdk_meter())

    async def run(call: Call) -> None:
        clock = asyncio.get_running_loop().time
        for _ in range(N):
            start = clock()
            await handler(call)
            duration.record(clock() - start, ATTRS)
            tokens.record(120, INPUT)
            tokens.record(40, OUTPUT)
    return run


def hand_written() -> Any:
    meter = sdk_meter()
    duration, tokens = histograms(meter)
    calls = meter.create_counter("llm.calls")
    in_flight = meter.create_up_down_counter("llm.in_flight")

    async def run(call: Call) -> None:
        clock = asyncio.get_running_loop().time
        for _ in range(N):
            in_flight.add(1, ATTRS)
            start = clock()
            await handler(call)
            duration.record(clock() - start, ATTRS)
            tokens.record(120, INPUT)
            tokens.record(40, OUTPUT)
            calls.add(1, ATTRS)
            in_flight.add(-1, ATTRS)
    return run


async def main() -> None:
    call = Call(handler, (), {"model": "gpt-4o"})
    variants = {
        "(a) Metrics, no SDK": layer(Metrics(provider="openai",
                                              meter_provider=NoOpMeterProvider())),
        "(a') Metrics, global API (proxy)": layer(Metrics(provider="openai")),
        "(b) Metrics, SDK": layer(Metrics(provider="openai", meter_provider=MeterProvider(
            metric_readers=[InMemoryMetricReader()]))),
        "(c) floor: 3 SDK records": floor(),
        "(d) hand-written: 3 records + 3 adds": hand_written(),
    }
    runs = {"bare": bare(), **variants}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():
            start = time.perf_counter()
            await run(call)
            samples[name].append((time.perf_counter() - start) / N * 1e6)
    base = statistics.median(samples["bare"])
    cost = {name: statistics.median(s) - base for name, s in samples.items() if name != "bare"}
    c, d = cost["(c) floor: 3 SDK records"], cost["(d) hand-written: 3 records + 3 adds"]
    print(f"per-call cost in µs (median of {REPEATS} x {N} calls, handler alone "
          f"{base:.2f} µs subtracted)\n")
    print(f"{'variant':40} {'µs/call':>8} {'vs (c)':>7} {'vs (d)':>7}")
    for name, value in cost.items():
        print(f"{name:40} {value:8.2f} {value / c:6.2f}x {value / d:6.2f}x")
    b = cost["(b) Metrics, SDK"]
    proxy = cost["(a') Metrics, global API (proxy)"]
    print(f"\ntargets: (a) < 2 µs: {cost['(a) Metrics, no SDK']:.2f} (proxy {proxy:.2f}); "
          f"(b) <= 1.15x (c): {b / c:.2f}x; (b) <= 0.7x (d): {b / d:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
