"""Composition: the README's stack against the alternatives, on servers shaped like real ones.

Each contender sends ``--calls`` chat requests at once (2.5x the 60 RPM quota by default) to two
simulated servers from ``llmguard.testing``, configured like real providers:

* fixed window: 60 requests and 40,000 tokens per clock minute, counted at arrival;
* token bucket: 60 RPM and 10,000 TPM buckets refilling continuously, charging the prompt plus
  ``max_tokens`` (200) up front (OpenAI), so TPM binds (about 47 requests a minute);
* input/output buckets: 60 RPM, 600 input and 3,000 output tokens per minute refilling
  continuously (Anthropic): input counted at arrival, output charged as ``max_tokens`` (200)
  and adjusted to the 64 used when the answer ends, so input and output bind (about 50 a
  minute); llmguard gets ``input_tpm``/``output_tpm``, aiolimiter a limiter for each.

Both answer 429 with Retry-After and take 2 s per request. Contenders, each what a user would
write with the quotas in hand:

* ``llmguard``: the README stack, Metrics -> Cache -> Fallback -> Retry(4) -> CircuitBreaker ->
  Timeout(30) -> RateLimit(rpm, tpm, charge="reserved", refill=...) -> ConcurrencyLimit(32),
  with the refill the README says to pick for the server: ``"continuous"`` for the token
  bucket, the default ``"window"`` for the fixed window;
* ``llmguard, no Timeout``: the same without Timeout(30) (issue 18, finding 1);
* ``llmguard, default refill="window"``: the README stack with the default refill on both
  (safe everywhere, slower against a bucket: it waits for whole windows after the first burst);
* ``tenacity + aiolimiter``: the OpenAI cookbook's ``@retry(wait_random_exponential(1, 60),
  stop_after_attempt(6))`` around an RPM and a TPM ``AsyncLimiter``;
* ``semaphore + SDK retries``: ``asyncio.Semaphore(32)`` around the openai SDK's own retry loop
  (2 retries, Retry-After when at most 60 s, else 0.5 s doubling to 8 s with jitter).

The table shows calls completed and failed, 429s the server sent, calls the server charged and
the client then cancelled, and the wall time (to the last call's end) as a ratio of the
server's own ideal (the earliest its quotas let the last request finish). Medians over
``--repeats`` seeds. Time is virtual (looptime): the run takes seconds of real time::

    python benchmarks/bench_composition.py
    python benchmarks/bench_composition.py --calls 300 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import looptime

import llmguard as lg
from llmguard.testing import (
    FixedWindowServer,
    InputOutputBucketServer,
    ProviderError,
    QuotaServer,
    TokenBucketServer,
)

RPM = 60
FIXED_TPM = 40_000
BUCKET_TPM = 10_000
MAX_TOKENS = 200
INPUT_TPM = 600
OUTPUT_TPM = 3_000
LATENCY = 2.0
SLOTS = 32

Send = Callable[..., Awaitable[Any]]


def fixed_window() -> QuotaServer:
    return FixedWindowServer(rpm=RPM, tpm=FIXED_TPM, latency=LATENCY)


def token_bucket() -> QuotaServer:
    return TokenBucketServer(rpm=RPM, tpm=BUCKET_TPM, latency=LATENCY)


def input_output() -> QuotaServer:
    return InputOutputBucketServer(rpm=RPM, input_tpm=INPUT_TPM, output_tpm=OUTPUT_TPM,
                                   latency=LATENCY)


SERVERS: dict[str, Callable[[], QuotaServer]] = {"fixed window": fixed_window,
                                                 "token bucket": token_bucket,
                                                 "input/output buckets": input_output}


def tpm_of(server: QuotaServer) -> int:
    return FIXED_TPM if isinstance(server, FixedWindowServer) else BUCKET_TPM


def refill_of(server: QuotaServer) -> str:
    """What the README tells a user to pick: ``"continuous"`` for a token-bucket provider
    (OpenAI, Anthropic), the default ``"window"`` otherwise."""
    buckets = (TokenBucketServer, InputOutputBucketServer)
    return "continuous" if isinstance(server, buckets) else "window"


def quotas_of(server: QuotaServer) -> dict[str, Any]:
    """The RateLimit quotas the README has a user give for ``server``."""
    if isinstance(server, InputOutputBucketServer):  # output given back: the default charge
        return {"rpm": RPM, "input_tpm": INPUT_TPM, "output_tpm": OUTPUT_TPM}
    return {"rpm": RPM, "tpm": tpm_of(server), "charge": "reserved"}


def prompt_tokens(**kwargs: Any) -> int:
    return lg.estimate_tokens(messages=kwargs["messages"], max_tokens=0)


def llmguard_stack(server: QuotaServer, seed: int, timeout: bool = True,
                   refill: str | None = None) -> Send:
    pipeline = (lg.Pipeline(name="bench").metrics().cache(ttl=300).fallback({"model": "backup"})
                .retry(attempts=4, seed=seed).circuit_breaker())
    if timeout:
        pipeline = pipeline.timeout(30)
    return (pipeline.rate_limit(**quotas_of(server), refill=refill or refill_of(server))
            .concurrency_limit(SLOTS).wrap(server.acompletion))


def llmguard_no_timeout(server: QuotaServer, seed: int) -> Send:
    return llmguard_stack(server, seed, timeout=False)


def llmguard_default_refill(server: QuotaServer, seed: int) -> Send:
    return llmguard_stack(server, seed, refill="window")


def tenacity_aiolimiter(server: QuotaServer, seed: int) -> Send:
    from aiolimiter import AsyncLimiter
    from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

    random.seed(seed)  # wait_random_exponential draws from the random module
    limiters: list[tuple[AsyncLimiter, Callable[..., int]]] = [
        (AsyncLimiter(RPM, 60), lambda **kwargs: 1)]
    if isinstance(server, InputOutputBucketServer):
        limiters += [(AsyncLimiter(INPUT_TPM, 60), prompt_tokens),
                     (AsyncLimiter(OUTPUT_TPM, 60), lambda **kwargs: kwargs["max_tokens"])]
    else:
        limiters.append((AsyncLimiter(tpm_of(server), 60), server.charge))

    async def send(**kwargs: Any) -> Any:
        async for attempt in AsyncRetrying(wait=wait_random_exponential(min=1, max=60),
                                           stop=stop_after_attempt(6), reraise=True):
            with attempt:
                for limiter, amount in limiters:
                    await limiter.acquire(amount(**kwargs))
                return await server.acompletion(**kwargs)
        raise AssertionError("unreachable")

    return send


def semaphore_sdk_retries(server: QuotaServer, seed: int) -> Send:
    semaphore = asyncio.Semaphore(SLOTS)
    rng = random.Random(seed)

    async def send(**kwargs: Any) -> Any:
        async with semaphore:
            for retry in range(3):  # the openai SDK's max_retries=2 loop
                try:
                    return await server.acompletion(**kwargs)
                except ProviderError as exc:
                    if exc.status_code not in (408, 409, 429, 500, 502, 503, 504) or retry == 2:
                        raise
                    after = float(exc.headers.get("retry-after", 0) or 0)
                    delay = after if 0 < after <= 60 else \
                        min(0.5 * 2**retry, 8.0) * (1 - 0.25 * rng.random())
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    return send


CONTENDERS: dict[str, Callable[[QuotaServer, int], Send]] = {
    "llmguard": llmguard_stack,
    "llmguard, no Timeout": llmguard_no_timeout,
    "llmguard, default refill=\"window\"": llmguard_default_refill,
    "tenacity + aiolimiter": tenacity_aiolimiter,
    "semaphore + SDK retries": semaphore_sdk_retries,
}


@dataclass(frozen=True)
class Row:
    contender: str
    server: str
    calls: int
    completed: int
    failed: int
    rate_limited: int
    cancelled_after_send: int
    wall: float
    ideal: float

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal


async def run_one(contender: str, server_kind: str, calls: int, seed: int = 0) -> Row:
    """One contender against a fresh server: ``calls`` requests started at once."""
    server = SERVERS[server_kind]()
    send = CONTENDERS[contender](server, seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    request = {"model": "primary", "max_tokens": MAX_TOKENS}
    results = await asyncio.gather(
        *(send(messages=[{"role": "user", "content": f"question number {i}"}], **request)
          for i in range(calls)), return_exceptions=True)
    wall = loop.time() - start
    failed = sum(isinstance(r, BaseException) for r in results)
    stats = server.statistics()
    typical = {"messages": [{"role": "user", "content": "question number 100"}], **request}
    if isinstance(server, InputOutputBucketServer):
        ideal = server.ideal_time(calls, input_tokens=prompt_tokens(**typical),
                                  max_tokens=MAX_TOKENS, output_tokens=server.output_tokens,
                                  start=start)
    else:
        ideal = server.ideal_time(calls, tokens=server.charge(**typical), start=start)
    return Row(contender, server_kind, calls, calls - failed, failed, stats.rate_limited,
               stats.cancelled_after_arrival, wall, ideal)


def median_row(rows: list[Row]) -> Row:
    def med(field: str) -> Any:
        return statistics.median(getattr(r, field) for r in rows)

    first = rows[0]
    return Row(first.contender, first.server, first.calls, med("completed"), med("failed"),
               med("rate_limited"), med("cancelled_after_send"), med("wall"), med("ideal"))


def format_table(rows: list[Row]) -> str:
    """A markdown table; a wall-time ratio is starred when not every call completed (the
    failed ones ended early, so the ratio flatters)."""
    lines = ["| server | contender | completed | failed | 429s | cancelled after send | "
             "wall / ideal |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        done = f"{r.completed:g}/{r.calls} ({100 * r.completed / r.calls:.0f}%)"
        star = "" if r.failed == 0 else "*"
        lines.append(f"| {r.server} | {r.contender} | {done} | {r.failed:g} | "
                     f"{r.rate_limited:g} | {r.cancelled_after_send:g} | "
                     f"{r.ratio:.2f}x{star} ({r.wall:.0f} s / {r.ideal:.0f} s) |")
    return "\n".join(lines)


def new_loop() -> asyncio.AbstractEventLoop:
    """A looptime loop at 0 whose timers never fire early.

    looptime rounds a timer's due time to its 1 us tick, sometimes down: aiolimiter then wakes
    a hair before its bucket has leaked enough, finds no room and sets the same timer again, at
    the same virtual instant, forever (150 ``acquire(212)`` on ``AsyncLimiter(10_000, 60)`` spin
    at t=129 s). One extra tick on every timer, for every contender alike, avoids it.
    """
    loop = looptime.new_event_loop(start=0, noop_cycles=1)
    call_at = loop.call_at

    def later_by_a_tick(when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return call_at(when + 1e-6, callback, *args, context=context)

    loop.call_at = later_by_a_tick  # type: ignore[method-assign]
    return loop


def compare(calls: int, repeats: int = 1) -> list[Row]:
    """Every contender against every server, medians over ``repeats`` seeds; each run on a
    fresh looptime loop whose clock starts at 0 (a window boundary of the fixed server)."""
    rows = []
    for server_kind in SERVERS:
        for contender in CONTENDERS:
            runs = []
            for seed in range(repeats):
                loop = new_loop()
                try:
                    runs.append(loop.run_until_complete(
                        run_one(contender, server_kind, calls, seed)))
                finally:
                    loop.close()
            rows.append(median_row(runs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="requests started at once")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per cell (median)")
    args = parser.parse_args()
    rows = compare(args.calls, args.repeats)
    print(f"{args.calls} calls at once, {RPM} RPM, {LATENCY:g} s per request, "
          f"median of {args.repeats}")
    print(format_table(rows))
    print("* not every call completed: the wall time ends with the last failure")


if __name__ == "__main__":
    main()
