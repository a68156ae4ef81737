"""Adaptive concurrency against static limits and the seed's batch-based scheme, in virtual time.

First table (issue #21 item 15): at capacity C = 4, 16, 64 and 256, 4C closed-loop clients call
a ``SimulatedProvider`` that serves C calls at full speed (1 s), stretches every call's latency by
``in_flight / C`` beyond that (processor sharing) and answers 429 past 3C in flight; a client that
gets an error waits 1 s. Each static limit of a sweep (C/2 .. 4C) and the default
``AdaptiveConcurrency(max=1024)`` (starting at 4) run for 300 simulated seconds; the table shows
the best static limit (most successful calls/s, then lowest p99) and the adaptive layer's goodput
as % of it, its p99 provider latency as a ratio of the static's, and its error rate. Target:
>= 95%, p99 <= 1.3x, errors < 1% at every capacity.

Then the older scenarios (256 clients, 503s past 2C): every algorithm and the seed scheme per
capacity, a capacity change (with the seconds until throughput is back within 10% of the new
optimum), and answers of varying length.

Runs on looptime's fast-forward event loop: deterministic (no repeats needed), a few real
seconds per run.

    python benchmarks/bench_adaptive.py [--capacities 4,16,64,256] [--duration 300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics

import looptime

import llmguard as lg
from llmguard.testing import Overloaded, SimulatedProvider, make_error

DURATION = 300.0
CLIENTS = 256
LATENCY = 1.0
#: Static limits swept for the target table, as multiples of the capacity.
SWEEP = (0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


def output_tokens(rng: random.Random, kwargs: dict) -> int:
    return rng.randint(20, 400)


class Run:
    """Counts what the clients saw: successes (with provider latency) and errors."""

    def __init__(self, provider: SimulatedProvider) -> None:
        self.provider = provider
        self.latencies: list[float] = []
        self.done_at: list[float] = []
        self.errors = 0

    async def call(self, send, i: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await send(messages=[{"role": "user", "content": str(i)}])
        except Exception:
            self.errors += 1
            await asyncio.sleep(1.0)  # the client backs off before its next request
            return
        self.latencies.append(result["latency"])
        self.done_at.append(loop.time())

    def goodput(self, duration: float) -> float:
        """Successful calls per second (calls still running at the end do not count)."""
        return sum(1 for t in self.done_at if t <= duration) / duration

    def p(self, q: int) -> float:
        """The ``q``-th percentile of provider latency."""
        if len(self.latencies) < 2:
            return 0.0
        return statistics.quantiles(self.latencies, n=100)[q - 1]

    def error_share(self) -> float:
        return 100 * self.errors / max(len(self.latencies) + self.errors, 1)


def timed(provider: SimulatedProvider, throttle_at: int | None = None):
    """The provider call, returning its own latency (admission wait excluded). With
    ``throttle_at``, the provider's refusal past that many calls in flight is a 429."""

    async def send(**kwargs):
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            result = await provider.acompletion(**kwargs)
        except Overloaded:
            if throttle_at is None:
                raise
            raise make_error(lg.FailureKind.RATE_LIMITED, retry_after=1.0) from None
        return {**result, "latency": loop.time() - start}

    return send


async def closed_loop(run: Run, send, clients: int, duration: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def client(n: int) -> None:
        i = n
        while loop.time() < end:
            await run.call(send, i)
            i += clients

    await asyncio.gather(*(client(n) for n in range(clients)))


async def seed_batches(run: Run, send, duration: float) -> None:
    """The seed's AdaptiveConcurrency: gather fixed batches, +1 if fast, -1 if slow."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    concurrency, i = 2, 0
    while loop.time() < end:
        start = loop.time()
        await asyncio.gather(*(run.call(send, i + k) for k in range(concurrency)))
        i += concurrency
        avg = (loop.time() - start) / concurrency
        if avg < 0.5:
            concurrency = min(concurrency + 1, 10)
        elif avg > 2.0:
            concurrency = max(concurrency - 1, 1)


def contenders(capacity: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, limit in (("too low", capacity // 2), ("right", capacity),
                         ("too high", capacity * 4)):
        out[f"static {limit} ({label})"] = lambda limit=limit: lg.ConcurrencyLimit(limit)
    for algorithm in ("gradient", "gradient2", "vegas", "aimd"):
        out[f"adaptive {algorithm}"] = lambda a=algorithm: lg.AdaptiveConcurrency(algorithm=a)
    out["seed batch scheme"] = None
    return out


class NoisyProvider(SimulatedProvider):
    """A SimulatedProvider whose unloaded latency is drawn per call from ``draw(rng)`` (seeded):
    latency that varies without any load behind it."""

    def __init__(self, draw, **options) -> None:
        super().__init__(**options)
        self.draw = draw
        self._noise = random.Random(7)

    async def _serve(self, input_tokens: int, output: int, charged: int) -> None:
        self.latency = self.draw(self._noise)  # read synchronously by the service time below
        await super()._serve(input_tokens, output, charged)


def simulate(capacity: int, make_layer, change: bool = False, variable_tokens: bool = False, *,
             clients: int = CLIENTS, duration: float = DURATION,
             throttle_at: int | None = None, provider: SimulatedProvider | None = None,
             step: float | None = None) -> Run:
    """One closed-loop run. ``provider`` replaces the default one; ``step`` multiplies its
    latency by that factor at a third of the run (same capacity: a slower provider, not a
    busier one)."""
    if provider is None:
        provider = SimulatedProvider(
            capacity=capacity,
            latency=0.5 if variable_tokens else LATENCY,
            seconds_per_output_token=0.0025 if variable_tokens else 0.0,
            output_tokens=output_tokens if variable_tokens else 64,
            overload_at=throttle_at,
        )
    run = Run(provider)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if change:
            async def shift() -> None:
                await asyncio.sleep(duration / 3)
                provider.capacity = capacity // 4
                await asyncio.sleep(duration / 3)
                provider.capacity = capacity
            loop.create_task(shift())
        if step is not None:
            async def slower() -> None:
                await asyncio.sleep(duration / 3)
                provider.latency *= step
            loop.create_task(slower())
        send = timed(provider, throttle_at)
        if make_layer is None:
            await seed_batches(run, send, duration)
        else:
            await closed_loop(run, lg.guard(make_layer())(send), clients, duration)

    loop = looptime.new_event_loop(start=0, noop_cycles=1)  # pure virtual time: no I/O to wait
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return run


#: The provider shapes of the target table (issue #21 item 15, issue #35 item 1), each at
#: capacity C: ``name -> (description, make(C) -> simulate() keyword arguments)``.
SHAPES = {
    "queueing": (
        "4C clients; C calls at full speed (1 s), latency x in_flight/C beyond; 429 past 3C",
        lambda c: {"clients": 4 * c, "throttle_at": 3 * c}),
    "noise": (
        "C clients, no load: room for 4C, latency uniform 0.75-1.25 s per call",
        lambda c: {"clients": c, "provider": NoisyProvider(
            lambda rng: rng.uniform(0.75, 1.25), capacity=4 * c, overload_at=12 * c)}),
    "noise 1-3 s": (
        "C clients, no load: room for 4C, latency uniform 1-3 s per call",
        lambda c: {"clients": c, "provider": NoisyProvider(
            lambda rng: rng.uniform(1.0, 3.0), capacity=4 * c, overload_at=12 * c)}),
    "step x3": (
        "as queueing, but at 1/3 of the run the latency triples (1 s -> 3 s), same capacity",
        lambda c: {"clients": 4 * c, "throttle_at": 3 * c, "step": 3.0}),
    "429 past C": (
        "4C clients; latency 0.95-1.05 s whatever the load up to C in flight, an instant 429 "
        "beyond (no latency signal)",
        lambda c: {"clients": 4 * c, "throttle_at": c, "provider": NoisyProvider(
            lambda rng: rng.uniform(0.95, 1.05), capacity=c, overload_at=c)}),
}


def recovery(run: Run, at: float, optimum: float, window: float = 5.0) -> float:
    """Seconds after ``at`` until a ``window``-long throughput is within 10% of ``optimum``."""
    times = sorted(t for t in run.done_at if t >= at)
    t = at
    while t < at + 100:
        rate = sum(1 for x in times if t <= x < t + window) / window
        if rate >= 0.9 * optimum:
            return t + window - at
        t += 1.0
    return float("inf")


def target_table(capacities: list[int], duration: float,
                 shapes: list[str] | None = None) -> bool:
    """Issue #21 item 15 and issue #35 item 1: the default adaptive layer against the best
    static limit, per provider shape and capacity."""
    shapes = list(SHAPES) if shapes is None else shapes
    print(f"\nTarget of #21 item 15 and #35 item 1: {duration:g} simulated s per run; adaptive = "
          "AdaptiveConcurrency(max=1024), starting at 4; best static of "
          + ", ".join(f"{f:g}C" for f in SWEEP))
    for name in shapes:
        print(f"- {name}: {SHAPES[name][0]}")
    print("| shape | capacity | best static limit | static ok/s | static p99 s | adaptive ok/s "
          "| adaptive % of static | p99 ratio | adaptive errors % | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    met = True
    for name in shapes:
        for capacity in capacities:
            options = SHAPES[name][1]
            statics = []
            for factor in SWEEP:
                limit = max(1, round(capacity * factor))
                run = simulate(capacity, lambda limit=limit: lg.ConcurrencyLimit(limit),
                               duration=duration, **options(capacity))
                statics.append((-round(run.goodput(duration), 1), run.p(99), limit, run))
            _, _, best_limit, best = min(statics, key=lambda s: s[:3])
            run = simulate(capacity, lambda: lg.AdaptiveConcurrency(max=1024),
                           duration=duration, **options(capacity))
            share = 100 * run.goodput(duration) / best.goodput(duration)
            ratio = run.p(99) / best.p(99)
            ok = share >= 95 and ratio <= 1.3 and run.error_share() < 1
            met = met and ok
            print(f"| {name} | {capacity} | {best_limit} | {best.goodput(duration):.1f} "
                  f"| {best.p(99):.2f} | {run.goodput(duration):.1f} | {share:.1f} | {ratio:.2f} "
                  f"| {run.error_share():.2f} | {'pass' if ok else 'MISS'} |")
    return met


def report(title: str, capacity: int, change: bool = False, variable: bool = False,
           duration: float = DURATION) -> None:
    ideal = capacity / (0.5 + 0.0025 * 210 if variable else LATENCY)
    print(f"\n{title}")
    header = "| contender | ok/s %ideal | p50 s | p99 s | errors % |"
    print(header + (" recover@C/4 s | recover@C s |" if change else ""))
    print("|---" * (7 if change else 5) + "|")
    for name, make in contenders(capacity).items():
        run = simulate(capacity, make, change, variable, duration=duration)
        line = (f"| {name} | {100 * run.goodput(duration) / ideal:.1f} | {run.p(50):.2f} "
                f"| {run.p(99):.2f} | {run.error_share():.2f} |")
        if change:
            low = recovery(run, duration / 3, ideal / 4)
            high = recovery(run, 2 * duration / 3, ideal)
            line += f" {low:.0f} | {high:.0f} |"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacities", default="4,16,64,256",
                        help="comma-separated capacities for the target table")
    parser.add_argument("--duration", type=float, default=DURATION, help="simulated seconds")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="comma-separated provider shapes for the target table")
    parser.add_argument("--quick", action="store_true",
                        help="only the target table (skip the per-algorithm scenarios)")
    args = parser.parse_args()
    capacities = [int(c) for c in args.capacities.split(",")]
    target_table(capacities, args.duration, args.shapes.split(","))
    if args.quick:
        return
    for capacity in [c for c in capacities if c <= 64]:
        report(f"capacity {capacity}, latency {LATENCY:g} s, {CLIENTS} clients, 503s past 2C",
               capacity, duration=args.duration)
    change = max(c for c in capacities if c <= 64) if min(capacities) <= 64 else 64
    report(f"capacity {change} -> {change // 4} at 1/3 of the run -> {change} at 2/3 "
           "(ok/s over the whole run)", change, change=True, duration=args.duration)
    variable = 16 if 16 in capacities else min(capacities)
    report(f"capacity {variable}, output 20-400 tokens at 2.5 ms/token (latency 0.55-1.5 s)",
           variable, variable=True, duration=args.duration)


if __name__ == "__main__":
    main()
