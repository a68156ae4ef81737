"""Rate limiting against a strict provider: quota use, 429s and the wait of the largest requests.

A :class:`llmguard.testing.SimulatedProvider` enforces sliding-window RPM and TPM and answers 429
with Retry-After. 5,000 calls of mixed sizes (50 to 8,000 tokens, log-normal heavy tail) arrive
as a Poisson stream offering ~105% of the token quota, so admission is what decides. Each
contender gets the same hand-written retry loop (sleep Retry-After, try again), so every call
eventually completes and the 429s show how often a contender hit the wall:

* llmguard ``RateLimit(rpm=..., tpm=...)`` (default estimator and usage reconciliation);
* aiolimiter used the usual way: one ``AsyncLimiter`` for requests, one for tokens (estimate);
* a plain ``asyncio.Semaphore`` (what many users write first).

Reported: achieved requests/min and tokens/min as % of quota after the first minute (until the
last arrival, while demand exceeds the quota), 429s, median wait and p99 wait of the largest 5%
of requests (arrival to admission by the provider). Medians over ``--repeats`` seeds.

Virtual time: a fast-forward loop jumps over every idle wait (half an hour of traffic runs in
seconds). Not looptime here: looptime rounds the clock to integer ticks, and aiolimiter's timer
then fires a hair before its target, finds a rounding-error's worth of capacity missing,
re-arms for "now" and spins forever at one virtual instant. Our loop keeps the real clock's
small forward drift under the jumps, as a real loop would.

    python benchmarks/bench_ratelimit.py [--calls 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time

from aiolimiter import AsyncLimiter

import llmguard as lg
from llmguard.testing import SimulatedProvider
from llmguard.testing._provider import RateLimited

RPM, TPM, LATENCY, LOAD = 1_000, 150_000, 2.0, 1.05
MAX_OUTPUT = 256  # outputs stay within the default output reservation of estimate_tokens


class FastForwardLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps over idle waits instead of sleeping through them."""

    def __init__(self) -> None:
        super().__init__()
        self._offset = -time.monotonic()  # start the clock at 0
        select = self._selector.select

        def fast_forward(timeout: float | None = None):
            if timeout:  # the loop would sleep until its next timer: jump there
                self._offset += timeout
            return select(0)

        self._selector.select = fast_forward  # type: ignore[method-assign]

    def time(self) -> float:
        return time.monotonic() + self._offset


def workload(calls: int, seed: int) -> list[tuple[float, int]]:
    """(arrival time, total tokens) per call: log-normal sizes clipped to [50, 8000]."""
    rng = random.Random(seed)
    sizes = [min(8000, max(50, int(rng.lognormvariate(math.log(400), 1.0)))) for _ in range(calls)]
    rate = LOAD * TPM / 60 / statistics.fmean(sizes)  # arrivals per second
    t, out = 0.0, []
    for size in sizes:
        t += rng.expovariate(rate)
        out.append((t, size))
    return out


def messages_for(total: int) -> list[dict[str, str]]:
    prompt = max(1, total - MAX_OUTPUT // 2 - 7)  # chat framing adds 7 tokens
    return [{"role": "user", "content": "x" * (4 * prompt)}]


def make_contenders(provider: SimulatedProvider):
    async def send(messages):
        return await provider.acompletion(messages=messages)

    rate_limit = lg.RateLimit(rpm=RPM, tpm=TPM)
    llmguard_send = lg.guard(rate_limit)(send)

    requests, tokens = AsyncLimiter(RPM, 60), AsyncLimiter(TPM, 60)

    async def aiolimiter_send(messages):
        await requests.acquire()
        await tokens.acquire(lg.estimate_tokens(messages=messages))
        return await send(messages)

    semaphore = asyncio.Semaphore(32)

    async def semaphore_send(messages):
        async with semaphore:
            return await send(messages)

    return {"llmguard RateLimit": llmguard_send, "aiolimiter (req + tok)": aiolimiter_send,
            "asyncio.Semaphore(32)": semaphore_send}


async def run(name: str, calls: int, seed: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed + 1)
    provider = SimulatedProvider(
        capacity=100_000, latency=LATENCY, rpm=RPM, tpm=TPM,
        output_tokens=lambda r, kw: rng.randint(16, MAX_OUTPUT),
    )
    fn = make_contenders(provider)[name]
    admitted: list[tuple[float, float, int, int]] = []  # arrival, admitted, size, tokens charged

    async def one(arrival: float, size: int) -> None:
        await asyncio.sleep(arrival - loop.time())
        while True:
            try:
                result = await fn(messages_for(size))
                break
            except RateLimited as exc:
                await asyncio.sleep(float(exc.headers["retry-after"]))
        usage = result["usage"]
        admitted.append((arrival, loop.time() - LATENCY, size, usage["total_tokens"]))

    work = workload(calls, seed)
    await asyncio.gather(*(one(*w) for w in work))
    end = work[-1][0]
    steady = [a for a in admitted if 60 <= a[1] <= end]
    minutes = (end - 60) / 60
    rpm = len(steady) / minutes / RPM * 100
    tpm = sum(a[3] for a in steady) / minutes / TPM * 100
    waits = [a[1] - a[0] for a in admitted]
    cutoff = sorted(a[2] for a in admitted)[int(len(admitted) * 0.95)]
    large = sorted(a[1] - a[0] for a in admitted if a[2] >= cutoff)
    return {
        "rpm": rpm, "tpm": tpm, "binding": max(rpm, tpm),
        "429s": provider.statistics().rate_limited,
        "p50 wait": statistics.median(waits),
        "p99 wait large": large[min(len(large) - 1, int(len(large) * 0.99))],
    }


def main(calls: int, repeats: int) -> None:
    names = list(make_contenders(SimulatedProvider()))
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for seed in range(repeats):
        for name in names:
            loop = FastForwardLoop()
            try:
                results[name].append(loop.run_until_complete(run(name, calls, seed)))
            finally:
                loop.close()
    columns = ["rpm", "tpm", "binding", "429s", "p50 wait", "p99 wait large"]
    print(f"{calls} calls, rpm={RPM}, tpm={TPM}, offered ~{LOAD:.0%} of tpm, "
          f"median of {repeats} seeds; quota % measured after the first minute")
    print(f"{'contender':24}" + "".join(f"{c:>16}" for c in
          ["RPM % quota", "TPM % quota", "binding %", "429s", "p50 wait s", "p99 wait big s"]))
    for name, runs in results.items():
        row = [statistics.median(r[c] for r in runs) for c in columns]
        print(f"{name:24}" + "".join(f"{v:16.1f}" for v in row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.calls, args.repeats)
