"""Composition: the README's stack with default settings against the alternatives, on servers
shaped like real ones, started on a minute and 40 s into one.

Each contender sends 3x the quota at once (``--demand``) to four simulated servers from
``llmguard.testing``, configured like real providers, each answering in 2 s:

* fixed window: 60 requests and 40,000 tokens per clock minute, counted at arrival, with
  ``x-ratelimit-remaining/reset-*`` headers (the reset points to the next boundary);
* token bucket: 60 RPM and 10,000 TPM buckets refilling continuously, charging the prompt plus
  ``max_tokens`` (200) up front, OpenAI's headers (TPM binds: about 47 requests a minute);
* sliding window: at most 60 requests in any 60 s, the reset when the oldest leaves;
* the fixed window and the token bucket without rate-limit headers (a 429 says when to
  retry), and a fixed and a sliding RPM window sending none and a bare 429 (no retry-after):
  the default probes them just after a clock minute (``_admission/ratelimit/silent.py``);
* clock-minute proxy: LiteLLM's proxy, ``rpm - 1`` per wall-clock minute, ``remaining`` without
  a reset and a 429 carrying only ``llm_provider-retry-after: 60``;
* input/output buckets (the default stack only): Anthropic's RPM, ITPM and OTPM buckets, output
  charged as ``max_tokens`` at arrival and given back to the output used, its headers; the same
  counted per clock minute (a gateway in front of Anthropic), each also keeping ``max_tokens``
  charged, and each with no rate-limit headers (a 429's ``retry-after`` only).

Every server answers 429 with its own headers, which the llmguard stack reads as its HTTP client
would (``RateLimit.observe_headers``). Contenders, each what a user would write with the quotas
in hand:

* ``llmguard (defaults)``: the README stack, Metrics -> Cache -> Fallback -> Retry(4) ->
  CircuitBreaker -> Timeout(30) -> RateLimit(rpm, tpm) -> ConcurrencyLimit(32), nothing else
  set: RateLimit paces like the server's limiter once it has learned its shape;
* ``llmguard, refill="window"``: the same with the sliding log kept (the old default);
* ``tenacity + aiolimiter``: the OpenAI cookbook's ``@retry(wait_random_exponential(1, 60),
  stop_after_attempt(6))`` around an RPM and a TPM ``AsyncLimiter``;
* ``semaphore + SDK retries``: ``asyncio.Semaphore(32)`` around the openai SDK's own retry loop
  (2 retries, Retry-After when at most 60 s, else 0.5 s doubling to 8 s with jitter).

A third table (the default stack, and the same with the former constant ``margin=0.5``) has a
cold network: the opening burst's requests take ``COLD`` s to reach the server (connection
set-up on a slow link), later ones ``WARM``; the measured margin has to cover it. Its ideal
and bounds start where a request can first reach the server, ``COLD`` s after the start (those
seconds added): from :59.2 on the minute turns before anything arrives, so it admits nothing of
the run (nothing can); a sliding window's or a bucket's ideal is ``COLD`` s later, a fixed
window's the same before :59.2.

With ``--slots N`` (and ``--latency S``, ``--adaptive``), a last table has the default stack
alone with ``ConcurrencyLimit(N)`` (``AdaptiveConcurrency(max=N)``) against the fixed, sliding
and bucket servers answering in ``S`` s: when N slots at S s send fewer calls a minute than
the quota, most calls RateLimit admits wait below it, and the ideal is then the soonest the
quotas *and* N calls in flight allow (``QuotaServer.ideal_time(in_flight=N)``)::

    python benchmarks/bench_composition.py --demand 10 --phases 40 --slots 8 --latency 8

A second table (``--strict``, the default stack alone) makes the token quota bind on every
shape (``STRICT_TPM``, about 43 requests a minute) on servers that charge 10% more than the
client's estimate (``charge_factor``: OpenAI counts a request from its characters, framing
included), each request taking 0 to 10 ms to reach the server (a burst arrives shuffled).
With ``--both-ways``, the same 0 to 10 ms on the way back too (the server's ``send_latency``):
answers, and the headers they carry, come back out of the order the server served them::

    python benchmarks/bench_composition.py --strict --both-ways --phases 0,20,40,55,56,57,58,59

``--both-ways`` goes with the tight table too, and alone puts 0 to 10 ms each way under every
table of the default run (the first, the input/output rows, the strict and the cold ones).

With ``--tight``, a table of the same servers charging exactly the client's estimate (47
requests a minute, 36 tokens to spare): nothing but probes finds the room the opening factor
leaves, and a minute they do not fill is lost for the whole run::

    python benchmarks/bench_composition.py --tight --phases 0,20,40,50,55,58,59

The table shows calls completed and failed, 429s the server sent, calls the server charged and
the client then cancelled, and the wall time (to the last call's end) as a ratio of the
server's own ideal: the earliest its quotas and its capacity let the last request finish. That
is at least each of the two bounds printed beside it, the quota bound (the soonest its quotas
admit the last request, plus its service) and the service bound (the queueing proxy's 4 workers
serving every request back to back; one service time elsewhere), and on the queueing proxy
more when a minute's quota leaves its workers idle until the next boundary. The third, the
slots bound, is the contender's own: the soonest with no more than its 32 calls in flight
(``QuotaServer.ideal_time(in_flight=)``; ``-``: it holds no slots). Started at :58 or :59, 32
answered 2 s later are all a fixed window's first minute can take from it, and three minutes'
quota needs a fourth: its wall time is that bound's, about twice the ideal. Medians over
``--repeats`` seeds. Time is virtual (looptime): the run takes seconds of real time::

    python benchmarks/bench_composition.py
    python benchmarks/bench_composition.py --demand 3 --repeats 3
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
from llmguard.testing import (FixedWindowServer, InputOutputBucketServer, ProviderError,
                              ProxyWindowServer, QuotaServer, SlidingWindowServer,
                              TokenBucketServer, cold_start, virtual_wall_clock)

RPM = 60
FIXED_TPM = 40_000
BUCKET_TPM = 10_000
MAX_TOKENS = 200
LATENCY = 2.0
SLOTS = 32

#: The strict table: a binding token quota, the server's charge 10% above the client's
#: estimate (the estimate is 10% under it), 0-10 ms on the way to the server.
STRICT_TPM = 10_000
STRICT_FACTOR = 1 / 0.9
STRICT_JITTER = 0.01

Send = Callable[..., Awaitable[Any]]

#: The default stack's inner limiter: ``slots`` calls in flight, adaptive (AdaptiveConcurrency
#: with that maximum) or not (ConcurrencyLimit); ``--slots``/``--adaptive`` change it.
CLIENT: dict[str, Any] = {"slots": SLOTS, "adaptive": False}

#: The cold table: seconds each way for the trips started within ``COLD_FOR`` s of the first
#: (the opening burst), then for every later one.
COLD, WARM, COLD_FOR = 0.8, 0.01, 1.0

#: Server options for the run in progress: ``tpm`` (None: each shape's own) and the
#: ``charge_factor``; ``jitter``, the most seconds a request takes to reach the server;
#: ``cold``, a cold network (``COLD``) first; ``both_ways``, the jitter on the way back too.
SCENARIO: dict[str, Any] = {"tpm": None, "charge_factor": 1.0, "jitter": 0.0, "cold": False,
                            "both_ways": False}


def _options(tpm: int) -> dict[str, Any]:
    return {"rpm": RPM, "tpm": SCENARIO["tpm"] or tpm, "latency": LATENCY,
            "charge_factor": SCENARIO["charge_factor"],
            "send_latency": cold_start(COLD, WARM, COLD_FOR) if SCENARIO["cold"] else 0.0}


def fixed_window() -> QuotaServer:
    return FixedWindowServer(**_options(FIXED_TPM))


def fixed_window_silent() -> QuotaServer:
    """A fixed clock-minute window that sends no rate-limit headers (its 429s say when to
    retry): nothing to learn the shape from until a 429."""
    return FixedWindowServer(**_options(FIXED_TPM), rate_limit_headers=False)


def fixed_window_mute() -> QuotaServer:
    """A fixed clock-minute RPM window that sends no rate-limit header (a bare 429 when over,
    no retry-after): nothing to learn the minute from but a probe."""
    return FixedWindowServer(**{**_options(FIXED_TPM), "tpm": SCENARIO["tpm"]},
                             rate_limit_headers=False, retry_after=False)


def sliding_window_mute() -> QuotaServer:
    """A sliding RPM window that sends no rate-limit header (a bare 429): the probe a fixed
    window passes costs it one 429."""
    return SlidingWindowServer(**{**_options(FIXED_TPM), "tpm": SCENARIO["tpm"]},
                               rate_limit_headers=False, retry_after=False)


def token_bucket() -> QuotaServer:
    return TokenBucketServer(**_options(BUCKET_TPM))


def token_bucket_silent() -> QuotaServer:
    """The token bucket without rate-limit headers (its 429s say when to retry): it refills
    between two answers, so a probe an answer after the last fits it whatever it charges."""
    return TokenBucketServer(**_options(BUCKET_TPM), rate_limit_headers=False)


def sliding_window() -> QuotaServer:
    return SlidingWindowServer(**_options(FIXED_TPM))


def proxy() -> QuotaServer:
    return ProxyWindowServer(**_options(FIXED_TPM))


def queueing_proxy() -> QuotaServer:
    """LiteLLM's proxy under load: a request counted when one of its 4 workers takes it, its
    headers counting answers (a boundary's burst is counted largely in the next minute)."""
    return ProxyWindowServer(**_options(FIXED_TPM), reports="answered", workers=4)


SERVERS: dict[str, Callable[[], QuotaServer]] = {
    "fixed window": fixed_window, "fixed window, no headers": fixed_window_silent,
    "fixed window (rpm), no headers, bare 429": fixed_window_mute,
    "token bucket": token_bucket, "token bucket, no headers": token_bucket_silent,
    "sliding window": sliding_window,
    "sliding window (rpm), no headers, bare 429": sliding_window_mute, "clock-minute proxy (rpm - 1)": proxy,
    "queueing proxy (4 workers)": queueing_proxy}


def tpm_of(server: QuotaServer) -> int | None:
    """The token quota a user would give for ``server`` (None: it counts requests only)."""
    if server.quotas.get("tokens") is None:
        return None
    return SCENARIO["tpm"] or (BUCKET_TPM if isinstance(server, TokenBucketServer)
                               else FIXED_TPM)


def on_the_way(server: QuotaServer, seed: int) -> Send:
    """``server.acompletion`` behind a network taking 0 to ``SCENARIO["jitter"]`` s per
    request (none: the server itself), and as long per answer with ``SCENARIO["both_ways"]``."""
    most = SCENARIO["jitter"]
    if not most:
        return server.acompletion
    rng = random.Random(seed)
    if SCENARIO["both_ways"]:
        # the server's own send_latency, not a sleep after the answer here: it tells the
        # answer's headers when the answer arrives, so they too come back out of order
        jitter_both_ways(server, rng, most)
        return server.acompletion

    async def send(**kwargs: Any) -> Any:
        await asyncio.sleep(rng.uniform(0, most))
        return await server.acompletion(**kwargs)

    return send


def jitter_both_ways(server: QuotaServer, rng: random.Random, most: float) -> None:
    """0 to ``most`` s more each way on ``server``'s own network (a cold one's seconds, or
    none), drawn from ``rng``."""
    network = server.send_latency

    def latency(server_rng: Any) -> float:
        return (network(server_rng) if callable(network) else network) + rng.uniform(0, most)

    server.send_latency = latency


def phase_of(server: QuotaServer) -> float:
    """Seconds into the server's minute now."""
    if isinstance(server, ProxyWindowServer):
        return server.phase()
    return asyncio.get_running_loop().time() % 60


def llmguard_stack(server: QuotaServer, seed: int, **settings: Any) -> Send:
    """The README stack with only the quotas given (plus ``settings``), fed the headers."""
    pipeline = (lg.Pipeline(name="bench").metrics().cache(ttl=300).fallback({"model": "backup"})
                .retry(attempts=4, seed=seed).circuit_breaker().timeout(30)
                .rate_limit(rpm=RPM, tpm=tpm_of(server), **settings))
    pipeline = (pipeline.adaptive_concurrency(max=CLIENT["slots"]) if CLIENT["adaptive"]
                else pipeline.concurrency_limit(CLIENT["slots"]))
    for layer in pipeline.layers:
        if isinstance(layer, lg.RateLimit):
            server.on_headers.append(layer.observe_headers)
    return pipeline.wrap(on_the_way(server, seed))


def llmguard_window(server: QuotaServer, seed: int) -> Send:
    return llmguard_stack(server, seed, refill="window")


def llmguard_former_margin(server: QuotaServer, seed: int) -> Send:
    return llmguard_stack(server, seed, margin=0.5)


def tenacity_aiolimiter(server: QuotaServer, seed: int) -> Send:
    from aiolimiter import AsyncLimiter
    from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

    random.seed(seed)  # wait_random_exponential draws from the random module
    tpm = tpm_of(server)
    requests, tokens = AsyncLimiter(RPM, 60), tpm and AsyncLimiter(tpm, 60)
    provider = on_the_way(server, seed)

    async def send(**kwargs: Any) -> Any:
        async for attempt in AsyncRetrying(wait=wait_random_exponential(min=1, max=60),
                                           stop=stop_after_attempt(6), reraise=True):
            with attempt:
                await requests.acquire()
                if tokens:
                    await tokens.acquire(lg.estimate_tokens(**kwargs))
                return await provider(**kwargs)
        raise AssertionError("unreachable")

    return send


def semaphore_sdk_retries(server: QuotaServer, seed: int) -> Send:
    semaphore = asyncio.Semaphore(SLOTS)
    rng = random.Random(seed)
    provider = on_the_way(server, seed)

    async def send(**kwargs: Any) -> Any:
        async with semaphore:
            for retry in range(3):  # the openai SDK's max_retries=2 loop
                try:
                    return await provider(**kwargs)
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
    "llmguard (defaults)": llmguard_stack,
    "llmguard, refill=\"window\"": llmguard_window,
    "tenacity + aiolimiter": tenacity_aiolimiter,
    "semaphore + SDK retries": semaphore_sdk_retries,
    "llmguard, margin=0.5 (the former default)": llmguard_former_margin,
}

#: The first table's contenders.
MAIN = tuple(CONTENDERS)[:4]


@dataclass(frozen=True)
class Row:
    contender: str
    server: str
    phase: float
    calls: int
    completed: int
    failed: int
    rate_limited: int
    cancelled_after_send: int
    wall: float
    ideal: float
    #: The two bounds the ideal is at least: the quotas' (the soonest they admit the last
    #: request, plus its service) and the server's capacity (its workers serving all of them
    #: back to back; one service time on a server that serves all at once).
    quota_bound: float = 0.0
    service_bound: float = 0.0
    #: The soonest with no more than the contender's own slots in flight (0: it holds none).
    slots_bound: float = 0.0

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal


def calls_for(server_kind: str, demand: float) -> int:
    """``demand`` times the requests the server's quotas admit per minute."""
    server = SERVERS[server_kind]()
    charge = server.charge(messages=[{"role": "user", "content": "question number 100"}],
                           max_tokens=MAX_TOKENS)
    return round(demand * min(RPM, (tpm_of(server) or RPM * charge) // charge))


async def run_one(contender: str, server_kind: str, calls: int, seed: int = 0,
                  phase: float = 0.0, slots: int | None = None) -> Row:
    """One contender against a fresh server: ``calls`` requests started at once, ``phase``
    seconds into the server's minute (``slots``: the ideal allows that many in flight)."""
    server = SERVERS[server_kind]()
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - phase_of(server)) % 60)
    send = CONTENDERS[contender](server, seed)
    start = loop.time()
    request = {"model": "primary", "max_tokens": MAX_TOKENS}
    results = await asyncio.gather(
        *(send(messages=[{"role": "user", "content": f"question number {i}"}], **request)
          for i in range(calls)), return_exceptions=True)
    wall = loop.time() - start
    failed = sum(isinstance(r, BaseException) for r in results)
    stats = server.statistics()
    charge = server.charge(messages=[{"role": "user", "content": "question number 100"}],
                           **request)
    # every bound from the first moment a request can reach the server (on a cold network
    # COLD s after the start: nothing the server's minute admits before then counts)
    reach = COLD if SCENARIO["cold"] else 0.0
    ask = {"tokens": charge, "start": start + reach}
    ideal = server.ideal_time(calls, **ask)
    if slots is not None:
        ideal = max(ideal, server.ideal_time(calls, **ask, in_flight=slots))
    held = slots_of(contender)
    return Row(contender, server_kind, phase, calls, calls - failed, failed, stats.rate_limited,
               stats.cancelled_after_arrival, wall, reach + ideal,
               reach + QuotaServer.ideal_time(server, calls, **ask),
               reach + service_bound(server, calls),
               held and reach + server.ideal_time(calls, **ask, in_flight=held))


def slots_of(contender: str) -> int:
    """Calls ``contender`` holds in flight at most (0: no bound of its own)."""
    if contender.startswith("llmguard"):
        return CLIENT["slots"]
    return SLOTS if contender == "semaphore + SDK retries" else 0


def service_bound(server: QuotaServer, calls: int) -> float:
    """Seconds ``server``'s own capacity takes to serve ``calls``, quotas aside."""
    if isinstance(server, ProxyWindowServer):
        return server.service_time(calls)
    return server.service_seconds()


def median_row(rows: list[Row]) -> Row:
    def med(field: str) -> Any:
        return statistics.median(getattr(r, field) for r in rows)

    first = rows[0]
    return Row(first.contender, first.server, first.phase, first.calls, med("completed"),
               med("failed"), med("rate_limited"), med("cancelled_after_send"), med("wall"),
               med("ideal"), med("quota_bound"), med("service_bound"), med("slots_bound"))


def clock(phase: float) -> str:
    """``phase`` s into a minute as the tables print it: ``:05``, ``:59.5`` (not rounded to
    ``:60``)."""
    given = f"{phase:g}"
    return f":0{given}" if phase < 10 else f":{given}"


def format_table(rows: list[Row]) -> str:
    """A markdown table; a wall-time ratio is starred when not every call completed (the
    failed ones ended early, so the ratio flatters)."""
    lines = ["| server | start | contender | completed | failed | 429s | cancelled after send "
             "| wall / ideal | quota / service / slots bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        done = f"{r.completed:g}/{r.calls} ({100 * r.completed / r.calls:.0f}%)"
        star = "" if r.failed == 0 else "*"
        lines.append(f"| {r.server} | {clock(r.phase)} | {r.contender} | {done} | {r.failed:g} | "
                     f"{r.rate_limited:g} | {r.cancelled_after_send:g} | "
                     f"{r.ratio:.2f}x{star} ({r.wall:.0f} s / {r.ideal:.0f} s) | "
                     f"{r.quota_bound:.0f} s / {r.service_bound:.0f} s / "
                     f"{f'{r.slots_bound:.0f} s' if r.slots_bound else '-'} |")
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


def compare(demand: float = 3.0, repeats: int = 1, phases: tuple[float, ...] = (0.0, 40.0),
            contenders: tuple[str, ...] | None = None, servers: tuple[str, ...] | None = None,
            slots: int | None = None) -> list[Row]:
    """Every contender against every server (or ``servers``), started ``phases`` seconds into
    its minute, medians over ``repeats`` seeds; each run on a fresh looptime loop (``slots``:
    the ideal allows that many calls in flight)."""
    rows = []
    for server_kind in servers or SERVERS:
        calls = calls_for(server_kind, demand)
        for phase in phases:
            for contender in contenders or MAIN:
                runs = []
                for seed in range(repeats):
                    loop = new_loop()
                    try:  # a clock minute starts at loop time 0, as the servers' windows do
                        with virtual_wall_clock():
                            runs.append(loop.run_until_complete(
                                run_one(contender, server_kind, calls, seed, phase, slots)))
                    finally:
                        loop.close()
                rows.append(median_row(runs))
    return rows


#: The input/output row: Anthropic's three buckets (requests, input and output tokens), each
#: call ``IO_PROMPT`` (98 input tokens) asking ``MAX_TOKENS`` and using 64 (the output quota
#: binds: 46 calls a minute, each holding 200 until its answer ends), against
#: ``RateLimit(rpm, input_tpm, output_tpm)`` and nothing else.
IO_INPUT_TPM, IO_OUTPUT_TPM, IO_OUTPUT, IO_PROMPT = 8_000, 3_000, 64, "word " * 70


#: The input/output servers: (shape, gives unused output back, sends its headers).
IO_SERVERS = [("bucket", True, True), ("bucket", False, True), ("fixed", True, True),
              ("fixed", False, True), ("bucket", True, False), ("bucket", False, False),
              ("fixed", True, False), ("fixed", False, False)]


async def run_input_output(calls: int, seed: int = 0, phase: float = 0.0,
                           gives_back: bool = True, shape: str = "bucket",
                           headers: bool = True) -> Row:
    """The README stack with only ``rpm``/``input_tpm``/``output_tpm`` against
    :class:`~llmguard.testing.InputOutputBucketServer`, ``phase`` s into the minute: Anthropic's
    buckets or a gateway's clock minute (``shape="fixed"``), one that gives unused output back
    (Anthropic's) or keeps ``max_tokens`` charged (``gives_back``), its headers sent or not."""
    server = InputOutputBucketServer(rpm=RPM, input_tpm=IO_INPUT_TPM, output_tpm=IO_OUTPUT_TPM,
                                     latency=LATENCY, output_tokens=IO_OUTPUT, shape=shape,
                                     refunds_output=gives_back, rate_limit_headers=headers)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - loop.time() % 60) % 60)
    pipeline = (lg.Pipeline(name="bench").metrics().cache(ttl=300).fallback({"model": "backup"})
                .retry(attempts=4, seed=seed).circuit_breaker().timeout(30)
                .rate_limit(rpm=RPM, input_tpm=IO_INPUT_TPM, output_tpm=IO_OUTPUT_TPM)
                .concurrency_limit(SLOTS))
    for layer in pipeline.layers:
        if isinstance(layer, lg.RateLimit):
            server.on_headers.append(layer.observe_headers)
    if SCENARIO["both_ways"]:
        jitter_both_ways(server, random.Random(seed), SCENARIO["jitter"])
    send = pipeline.wrap(server.amessages)
    start = loop.time()
    results = await asyncio.gather(*(
        send(model="primary", max_tokens=MAX_TOKENS,
             messages=[{"role": "user", "content": f"{IO_PROMPT}{i}"}])
        for i in range(calls)), return_exceptions=True)
    wall = loop.time() - start
    failed = sum(isinstance(r, BaseException) for r in results)
    stats = server.statistics()
    prompt = server.charge(messages=[{"role": "user", "content": f"{IO_PROMPT}100"}],
                           max_tokens=0)
    shape = ("input/output buckets" if shape == "bucket" else "input/output per clock minute") \
        + ("" if gives_back else ", max_tokens kept") + ("" if headers else ", no headers")
    ask = {"start": start, "input_tokens": prompt, "max_tokens": MAX_TOKENS,
           "output_tokens": IO_OUTPUT if gives_back else MAX_TOKENS}
    bound = server.ideal_time(calls, **ask)  # every answer's unused output back at once
    # each call holding its max_tokens until its answer ends, SLOTS at once (from :58 only
    # 15 fit before :00): the ideal; the bound beside it
    ideal = max(bound, server.ideal_time(calls, **ask, in_flight=SLOTS))
    return Row("llmguard (defaults)", shape, phase, calls, calls - failed,
               failed, stats.rate_limited, stats.cancelled_after_arrival, wall, ideal, bound,
               server.latency)


def compare_input_output(demand: float = 3.0, repeats: int = 1,
                         phases: tuple[float, ...] = (0.0, 40.0)) -> list[Row]:
    """:func:`run_input_output` at ``demand`` times the binding quota, medians over seeds, on
    each of ``IO_SERVERS`` (the wall clock pinned to the loop's: a clock minute starts at 0)."""
    calls = round(demand * min(RPM, IO_INPUT_TPM // 98, IO_OUTPUT_TPM // IO_OUTPUT))
    rows = []
    for shape, gives_back, headers in IO_SERVERS:
        for phase in phases:
            runs = []
            for seed in range(repeats):
                loop = new_loop()
                try:
                    with virtual_wall_clock():
                        runs.append(loop.run_until_complete(run_input_output(
                            calls, seed, phase, gives_back, shape, headers)))
                finally:
                    loop.close()
            rows.append(median_row(runs))
    return rows


def compare_strict(demand: float = 3.0, repeats: int = 1,
                   phases: tuple[float, ...] = (0.0, 40.0),
                   contenders: tuple[str, ...] = ("llmguard (defaults)",),
                   both_ways: bool = False) -> list[Row]:
    """:func:`compare` on the strict servers: ``STRICT_TPM`` binding everywhere, a charge
    ``STRICT_FACTOR`` times the client's estimate, ``STRICT_JITTER`` s on the way (each way
    when ``both_ways``)."""
    saved = dict(SCENARIO)
    SCENARIO.update(tpm=STRICT_TPM, charge_factor=STRICT_FACTOR, jitter=STRICT_JITTER,
                    both_ways=both_ways)
    try:
        return compare(demand, repeats, phases, contenders)
    finally:
        SCENARIO.update(saved)


def compare_tight(demand: float = 3.0, repeats: int = 1,
                  phases: tuple[float, ...] = (0.0, 40.0),
                  contenders: tuple[str, ...] = ("llmguard (defaults)",),
                  both_ways: bool = False) -> list[Row]:
    """:func:`compare_strict` on servers charging exactly the client's estimate."""
    saved = dict(SCENARIO)
    SCENARIO.update(tpm=STRICT_TPM, jitter=STRICT_JITTER, both_ways=both_ways)
    try:
        return compare(demand, repeats, phases, contenders)
    finally:
        SCENARIO.update(saved)


def compare_cold(demand: float = 3.0, repeats: int = 1, phases: tuple[float, ...] = (40.0,),
                 contenders: tuple[str, ...] = ("llmguard (defaults)",
                                                "llmguard, margin=0.5 (the former default)"),
                 both_ways: bool = False) -> list[Row]:
    """:func:`compare` on a cold network (``llmguard.testing.cold_start``; with ``both_ways``,
    ``STRICT_JITTER`` s more each way)."""
    saved = dict(SCENARIO)
    SCENARIO.update(cold=True, both_ways=both_ways, jitter=STRICT_JITTER if both_ways else 0.0)
    try:
        return compare(demand, repeats, phases, contenders)
    finally:
        SCENARIO.update(saved)


#: The slots table's servers: the quota binds alone on each (headers sent).
SLOTS_SERVERS = ("fixed window", "sliding window", "token bucket")


def compare_slots(demand: float, repeats: int, phases: tuple[float, ...], slots: int,
                  latency: float, adaptive: bool = False) -> list[Row]:
    """:func:`compare` for the default stack alone with ``slots`` calls in flight below its
    RateLimit (AdaptiveConcurrency with that maximum when ``adaptive``), each answered in
    ``latency`` s, against ``SLOTS_SERVERS``; the ideal allows ``slots`` in flight."""
    global LATENCY
    saved, CLIENT["slots"], CLIENT["adaptive"] = (LATENCY, dict(CLIENT)), slots, adaptive
    LATENCY = latency
    try:
        return compare(demand, repeats, phases, ("llmguard (defaults)",), SLOTS_SERVERS, slots)
    finally:
        LATENCY, client = saved
        CLIENT.update(client)


def compare_main(demand: float = 3.0, repeats: int = 1, phases: tuple[float, ...] = (0.0, 40.0),
                 both_ways: bool = False) -> list[Row]:
    """The first table: :func:`compare` and :func:`compare_input_output` (with ``both_ways``,
    0 to ``STRICT_JITTER`` s each way)."""
    saved = dict(SCENARIO)
    SCENARIO.update(both_ways=both_ways, jitter=STRICT_JITTER if both_ways else 0.0)
    try:
        return compare(demand, repeats, phases) + compare_input_output(demand, repeats, phases)
    finally:
        SCENARIO.update(saved)


def _strict_title(demand: float | None = None, repeats: int | None = None,
                  both_ways: bool = False) -> str:
    title = (f"Strict servers: {STRICT_TPM:,} TPM binding on every shape, each request charged "
             f"{STRICT_FACTOR:.3g}x the client's estimate, 0-{STRICT_JITTER * 1000:g} ms to "
             + ("arrive and as long to come back" if both_ways else "arrive"))
    return title if demand is None else f"{title}, {demand:g}x the quota, median of {repeats}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demand", type=float, default=3.0,
                        help="calls at once, as a multiple of the quota per minute")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per cell (median)")
    parser.add_argument("--phases", default="0,20,40,55,58,59",
                        help="seconds into the minute each run starts, comma-separated "
                             "(the cold table: the last)")
    parser.add_argument("--slots", type=int, default=None,
                        help="a last table: the default stack with this many calls in flight "
                             "below its RateLimit (ConcurrencyLimit(N))")
    parser.add_argument("--adaptive", action="store_true",
                        help="with --slots: AdaptiveConcurrency(max=N) instead")
    parser.add_argument("--latency", type=float, default=None,
                        help=f"with --slots: seconds per request (default {LATENCY:g})")
    parser.add_argument("--tight", action="store_true",
                        help=f"only the tight table: {STRICT_TPM:,} TPM binding on every "
                             "shape, each request charged exactly the client's estimate")
    parser.add_argument("--strict", action="store_true",
                        help=f"only the strict table: {STRICT_TPM:,} TPM binding on every "
                             f"shape, each request charged {STRICT_FACTOR:.3g}x the client's "
                             "estimate")
    parser.add_argument("--both-ways", action="store_true",
                        help=f"each answer too takes 0-{STRICT_JITTER * 1000:g} ms to come back "
                             "(the server's send_latency), so answers and their headers arrive "
                             "out of the order they were served (the first and cold tables: "
                             "as long to arrive too)")
    args = parser.parse_args()
    if args.both_ways and args.slots is not None:
        parser.error("--both-ways does not go with --slots")
    phases = tuple(float(p) for p in args.phases.split(","))
    if args.tight:
        print(f"Tight servers: {STRICT_TPM:,} TPM binding on every shape, each request charged "
              f"the client's estimate, 0-{STRICT_JITTER * 1000:g} ms to "
              + ("arrive and as long to come back" if args.both_ways else "arrive")
              + f", {args.demand:g}x the quota, median of {args.repeats}")
        print(format_table(compare_tight(args.demand, args.repeats, phases,
                                         both_ways=args.both_ways)))
        return
    if args.strict:
        print(_strict_title(args.demand, args.repeats, args.both_ways))
        print(format_table(compare_strict(args.demand, args.repeats, phases,
                                          both_ways=args.both_ways)))
        return
    if args.slots is not None:
        inner = "AdaptiveConcurrency(max=" if args.adaptive else "ConcurrencyLimit("
        latency = LATENCY if args.latency is None else args.latency
        print(f"{args.demand:g}x the quota at once, {RPM} RPM, {inner}{args.slots}) below the "
              f"RateLimit, {latency:g} s per request, median of {args.repeats}; the ideal "
              f"allows {args.slots} calls in flight")
        print(format_table(compare_slots(args.demand, args.repeats, phases, args.slots,
                                         latency, args.adaptive)))
        return
    rows = compare_main(args.demand, args.repeats, phases, args.both_ways)
    network = f", 0-{STRICT_JITTER * 1000:g} ms each way" if args.both_ways else ""
    print(f"{args.demand:g}x the quota at once, {RPM} RPM, {LATENCY:g} s per request{network}, "
          f"started {', '.join(clock(p) for p in phases)} into a minute, median of "
          f"{args.repeats}")
    print(format_table(rows))
    print("* not every call completed: the wall time ends with the last failure")
    print(f"\n{_strict_title(both_ways=args.both_ways)}")
    print(format_table(compare_strict(args.demand, args.repeats, phases,
                                      both_ways=args.both_ways)))
    print(f"\nCold network: the opening burst {COLD:g} s to reach the server, later requests "
          f"{WARM * 1000:g} ms{network}; started {clock(phases[-1])} into a minute")
    print(format_table(compare_cold(args.demand, args.repeats, phases[-1:],
                                    both_ways=args.both_ways)))


if __name__ == "__main__":
    main()
