"""429s injected under 10x demand: is the provider ever idle longer than the pause it asked?

Issue 30's promise: with 429s the quota did not cause (a provider's own overload answered as
429, or a storm of them) the client waits out the pause the server asked for and no longer.
Each contender of ``bench_composition.py`` sends ``--demand`` times the quota at once to a
server shaped like a real one (a fixed window and a token bucket, with their headers), behind
an injector that answers some requests 429 (in ``REFUSAL_TRIP`` s) before the server counts
them:

* ``random``: each request with probability ``--rate`` (5 %), ``retry-after: 2``;
* ``storm``: every 120 s, 15 s in which every request gets a 429 asking for the rest of it.

A sampler reads, every 50 ms of virtual time, whether the provider was *idle with room*:
callers still waiting, nothing in flight at the server and no request arriving, no pause any
429 asked still in force, and the server's quotas holding room for a request. The table shows the longest such stretch and
their sum, next to calls completed and failed, 429s (injected and the server's own) and wall
time over the server's ideal (its quotas alone: the injected pauses are not in it). Time is
virtual (looptime). ``--shapes`` takes other servers of ``bench_composition.SERVERS``
(``;``-separated: their names hold commas), such as the ones that send no rate-limit header::

    python benchmarks/bench_storms.py
    python benchmarks/bench_storms.py --demand 10 --repeats 3 --rate 0.05
    python benchmarks/bench_storms.py --shapes "token bucket, no headers;fixed window, no headers"
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_composition as composition  # noqa: E402
from llmguard.testing import ProviderError, virtual_wall_clock  # noqa: E402

#: Sampling step of the idle reading, seconds of virtual time.
STEP = 0.05
#: Storms: one every ``STORM_EVERY`` s, lasting ``STORM_FOR`` s.
STORM_EVERY, STORM_FOR = 120.0, 15.0
SHAPES = ("fixed window", "token bucket")
#: Seconds an injected 429 takes to come back (a network round trip, no service).
REFUSAL_TRIP = 0.05


@dataclass(frozen=True)
class Row:
    contender: str
    server: str
    injected: str
    calls: int
    completed: int
    failed: int
    rate_limited: int
    longest_idle: float
    idle: float
    wall: float
    ideal: float


class Injector:
    """``server.acompletion`` behind 429s the server's quotas did not cause; it keeps when
    requests arrived and which pauses were asked."""

    def __init__(self, server: Any, kind: str, rate: float, seed: int) -> None:
        self.server, self.kind, self.rate = server, kind, rate
        self.rng = random.Random(seed)
        self.send = server.acompletion
        self.last_arrival = 0.0
        self.paused_until = 0.0
        self.injected = 0

    def _refuse(self, now: float) -> float | None:
        if self.kind == "storm":
            left = STORM_FOR - now % STORM_EVERY
            return left if left > 0 else None
        return 2.0 if self.rng.random() < self.rate else None

    async def __call__(self, **kwargs: Any) -> Any:
        now = asyncio.get_running_loop().time()
        self.last_arrival = now
        pause = self._refuse(now)
        if pause is not None:
            self.injected += 1
            self.paused_until = max(self.paused_until, now + pause)
            await asyncio.sleep(REFUSAL_TRIP)
            raise ProviderError("Rate limit reached (injected)", status_code=429,
                                headers={"retry-after": f"{pause:.3f}"})
        try:
            return await self.send(**kwargs)
        except ProviderError as exc:
            if exc.status_code == 429:
                after = float(exc.headers.get("retry-after", 0) or 0)
                self.paused_until = max(self.paused_until, now + after)
            raise


def has_room(server: Any, now: float, charge: int) -> bool:
    """True when every quota of ``server`` would admit a request of ``charge`` tokens now."""
    requests, tokens = server.quotas.get("requests"), server.quotas.get("tokens")
    return (requests is None or requests.remaining(now) >= 1) and (
        tokens is None or tokens.remaining(now) >= charge)


async def run_one(contender: str, shape: str, injected: str, calls: int, rate: float,
                  seed: int) -> Row:
    server = composition.SERVERS[shape]()
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40.0 - composition.phase_of(server)) % 60)  # mid-minute
    injector = Injector(server, injected, rate, seed)
    server.acompletion = injector  # (what the contender's stack sends to)
    send = composition.CONTENDERS[contender](server, seed)
    request = {"model": "primary", "max_tokens": composition.MAX_TOKENS}
    charge = server.charge(messages=[{"role": "user", "content": "question number 100"}],
                           **request)
    pending = calls
    idle_now = longest = total = 0.0

    async def one(i: int) -> Any:
        nonlocal pending
        try:
            return await send(messages=[{"role": "user", "content": f"question number {i}"}],
                              **request)
        finally:
            pending -= 1

    async def sample() -> None:
        nonlocal idle_now, longest, total
        while pending:
            await asyncio.sleep(STEP)
            now = loop.time()
            if not server.statistics().in_flight and now - injector.last_arrival >= STEP \
                    and now >= injector.paused_until and has_room(server, now, charge):
                idle_now += STEP
                total += STEP
                longest = max(longest, idle_now)
            else:
                idle_now = 0.0

    start = loop.time()
    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(one(i) for i in range(calls)), return_exceptions=True)
    wall = loop.time() - start
    await sampler
    failed = sum(isinstance(r, BaseException) for r in results)
    return Row(contender, shape, injected, calls, calls - failed, failed,
               server.statistics().rate_limited + injector.injected, longest, total, wall,
               server.ideal_time(calls, tokens=charge, start=start))


def compare(demand: float = 10.0, repeats: int = 1, rate: float = 0.05,
            contenders: tuple[str, ...] | None = None,
            shapes: tuple[str, ...] | None = None) -> list[Row]:
    """Every contender on every shape (``bench_composition.SERVERS``' names; None:
    ``SHAPES``) under each injection, medians over ``repeats`` seeds."""
    rows = []
    for shape in shapes or SHAPES:
        calls = composition.calls_for(shape, demand)
        for injected in ("random", "storm"):
            for contender in contenders or composition.MAIN:
                runs = []
                for seed in range(repeats):
                    loop = composition.new_loop()
                    try:
                        with virtual_wall_clock():
                            runs.append(loop.run_until_complete(
                                run_one(contender, shape, injected, calls, rate, seed)))
                    finally:
                        loop.close()
                rows.append(Row(contender, shape, injected, calls, *(
                    statistics.median(getattr(r, f) for r in runs) for f in (
                        "completed", "failed", "rate_limited", "longest_idle", "idle", "wall",
                        "ideal"))))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| server | 429s injected | contender | completed | failed | 429s | longest idle "
             "with room | idle with room, total | wall / ideal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.server} | {r.injected} | {r.contender} | {r.completed:g}/{r.calls} | "
                     f"{r.failed:g} | {r.rate_limited:g} | {r.longest_idle:.2f} s | "
                     f"{r.idle:.1f} s | {r.wall / r.ideal:.2f}x ({r.wall:.0f} s / "
                     f"{r.ideal:.0f} s) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demand", type=float, default=10.0, help="times the quota, at once")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per cell (median)")
    parser.add_argument("--rate", type=float, default=0.05,
                        help="probability of a random injected 429")
    parser.add_argument("--shapes", default=";".join(SHAPES),
                        help="servers, ';'-separated, of: " + "; ".join(composition.SERVERS))
    args = parser.parse_args()
    shapes = tuple(s.strip() for s in args.shapes.split(";") if s.strip())
    unknown = [s for s in shapes if s not in composition.SERVERS]
    if not shapes or unknown:
        parser.error(f"--shapes must name servers of bench_composition.SERVERS, got {unknown or shapes}")
    if not args.demand > 0:
        parser.error(f"--demand must be above 0 (times the quota), got {args.demand}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not 0 <= args.rate < 1:
        parser.error(f"--rate must be a probability in [0, 1), got {args.rate}")
    print(format_table(compare(args.demand, args.repeats, args.rate, shapes=shapes)))


if __name__ == "__main__":
    main()
