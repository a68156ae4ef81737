"""Four processes sharing one RPM/TPM quota through Redis, against one strict provider.

The provider is shared too, so it can count what all four send: it is a Lua script in the same
Redis applying the provider's rule (at most R requests and T tokens in any W-second sliding
window, on the server clock), answering 429 when a call would exceed it. Counting admissions in
Redis rather than running ``SimulatedProvider`` behind an HTTP server keeps the provider exact and
its cost (one round trip) small next to the 50 ms simulated latency it adds.

Time is real (four processes, one server clock), so the quota window is scaled down from 60 s to
W = 3 s: ``rpm=60`` means 60 requests per 3 s here. Each process runs 16 concurrent callers,
wanting far more than the quota; the provider counts its OKs over a common D = 12 s span (server
time, after all four processes started), so "quota used" is OKs / (60 x 12 / 3). The limiters
keep a 2% margin on the window (``MARGIN``) for the admission-to-provider delay. Contenders, side by side in one run:

* ``redis``: ``RateLimit(rpm, tpm, backend=RedisBackend(url))`` in each process, full quota;
* ``local, full quota``: each process with its own in-memory limit at the full quota (4x over);
* ``local, quota/4``: each process with a quarter (what a careful user does without sharing;
  it matches here because the four processes want the same; with uneven demand the quarter of
  an idle process is wasted while the busy ones wait).

Then the per-call overhead the Redis backend adds: uncontended calls through ``RateLimit`` with
the in-memory backend and with Redis under each refill, one after another and 16 callers at
once, median of 5 repeats of 2,000 calls (rows interleaved). Under the default a call costs
one round trip: its reservation carries the previous call's settlement (``_settlements``).

Then the shapes table: two processes sharing Redis (two ``RateLimit(rpm=...)`` layers in one
event loop, each with its own ``RedisBackend``: nothing shared but Redis), default settings,
demand 1.5x the quota at once, against the simulated servers of ``llmguard.testing``: a token
bucket, a fixed window whose minute started 40 s before the batch, LiteLLM's proxy (``rpm - 1``
per wall-clock minute, no reset, ``llm_provider-retry-after: 60``) 40 s into the minute, the
same proxy under load (a request counted when one of its 4 workers takes it from its queue,
headers counting answers; demand 3x the quota), a sliding window; real 60 s windows (shapes are learned from resets, read to a second). Side by side, the default
(``refill="auto"``: the shape one process learns is shared, every process paces by it) and
``refill="window"``, the sliding log, which is what Redis paced by under the default before.
Wall time over the server's own ideal (``QuotaServer.ideal_time``), 429s, the most one server
window saw.

Then the queueing-proxy table: LiteLLM's proxy under load (a request counted when one of its 4
workers takes it, headers counting answers, ``remaining`` without a reset), demand 3x the quota
at once, started 40 s and 57 s into its minute (late in a minute, few answers come before the
boundary: its first answers after it, which count every process's requests, decide). Side by
side: two processes sharing Redis (defaults, ``Retry(attempts=4)`` around each), one process in
memory with the whole demand, and tenacity + aiolimiter in each of two processes at half the
quota each (what a careful user without shared state writes).

Then the silent table: servers that say nothing of their limits (no rate-limit header, a bare
429: a fixed window on the wall clock's minute, a sliding window, a token bucket), demand 3x the
quota at once from 40 s into a minute, windows compressed to 10 s: three processes sharing
Redis (defaults: probed once for all of them, ``_silent``), and one process in memory. Its
strict rows: the same shapes with a binding token quota (19 requests a window as the server
charges), each request charged 1.11x the client's estimate (the charge factor is learned:
``_charge``, once for all processes); 3x that at once, so a factor kept above 1.1386x (18 a
window) finishes a window late (1.75x on the fixed window).

    python benchmarks/bench_distributed.py [--url redis://127.0.0.1:6379/0] [--shapes-only]
        [--overhead-only] [--queueing-only [--window SECONDS]]
        [--silent-only [--window S] [--start S (of 60: the silent table's start, default :40)]]
    (~1 minute, the shapes table ~11 more, the queueing table ~25 more; --window 10 compresses
    the proxy's minute to 10 s, the table to ~5 minutes; the silent table ~3 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
import uuid

import llmguard as lg
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

PROCESSES, CALLERS, WINDOW, DURATION = 4, 16, 3.0, 12.0
RPM, TPM, TOKENS, LATENCY = 60, 8_000, 100, 0.05
#: Every limiter's window is this much longer than the provider's: the delay between admission
#: and the provider seeing the call varies (scheduling on a loaded host, the network), and a
#: strict sliding window counts from arrival. 2% of the window; the same for every contender.
MARGIN = 0.06

#: The strict provider: KEYS log ZSET ("id:tokens" by time), 429 and OK counters. ARGV id,
#: tokens, R, T, W, measurement start and end (server time): OKs are counted inside them only.
PROVIDER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1)
local used = 0
for _, e in ipairs(entries) do used = used + tonumber(string.match(e, ':(%d+)$')) end
if #entries + 1 > tonumber(ARGV[3]) or used + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  redis.call('INCR', KEYS[2])
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. ARGV[2])
if now >= tonumber(ARGV[6]) and now < tonumber(ARGV[7]) then redis.call('INCR', KEYS[3]) end
return 1
"""


async def worker(url: str, mode: str, prefix: str, start: float) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    provider = client.register_script(PROVIDER)
    keys = [f"{prefix}:provider", f"{prefix}:429", f"{prefix}:ok"]
    share = 4 if mode == "local, quota/4" else 1
    backend = RedisBackend(url, prefix=prefix) if mode == "redis" else None
    limit = lg.RateLimit(rpm=RPM // share, tpm=TPM // share, backend=backend,
                         tokens=lambda *a, **k: TOKENS, usage=lambda result: TOKENS)
    window = WINDOW + MARGIN
    limit.quotas = (Quota(RPM // share, window, False), Quota(TPM // share, window, True))
    ids = iter(range(10**9))
    tag = uuid.uuid4().hex[:8]

    async def call() -> None:
        await provider(keys=keys, args=[f"{tag}{next(ids)}", TOKENS, RPM, TPM, WINDOW,
                                        start, start + DURATION])
        await asyncio.sleep(LATENCY)

    guarded = lg.guard(limit)(call)
    loop = asyncio.get_running_loop()
    end = loop.time() + DURATION + (start - time.time()) + WINDOW  # past the measured span

    async def caller() -> None:
        while loop.time() < end:
            await guarded()

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    if backend is not None:
        await backend.aclose()
    await client.aclose()


def run_process(url: str, mode: str, prefix: str, start: float) -> None:
    time.sleep(max(0.0, start - time.time()))  # a common start for the four processes
    asyncio.run(worker(url, mode, prefix, start))


def contend(url: str, mode: str) -> tuple[int, int]:
    import redis

    prefix = f"bench-distributed-{uuid.uuid4().hex[:8]}"
    start = time.time() + 3.0  # spawned interpreters import llmguard and redis meanwhile
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_process, args=(url, mode, prefix, start))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    client = redis.Redis.from_url(url)
    ok, rejected = (int(client.get(f"{prefix}:{k}") or 0) for k in ("ok", "429"))
    client.delete(*client.keys(prefix + "*"))
    client.close()
    return ok, rejected


#: The overhead table's rows: (label, refill, callers at once; None refill: the memory backend).
OVERHEAD = (("memory backend", None, 1), ("redis, refill='auto' (default)", "auto", 1),
            ("redis, refill='window'", "window", 1), ("redis, refill='continuous'", "continuous", 1),
            ("redis, default, 16 at once", "auto", 16))


async def overhead(url: str, calls: int = 2000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per call through ``RateLimit(rps=10**6)`` for each row of ``OVERHEAD``
    (median of ``repeats``, rows interleaved); "at once": ``calls`` spread over that many
    callers under ``gather``, wall time per call."""
    async def noop() -> None:
        return None

    async def caller(guarded: object, n: int) -> None:
        for _ in range(n):
            await guarded()

    results: dict[str, list[float]] = {label: [] for label, _, _ in OVERHEAD}
    for _ in range(repeats):
        for label, refill, width in OVERHEAD:
            backend = RedisBackend(url, prefix=f"bench-overhead-{uuid.uuid4().hex[:8]}") \
                if refill else None
            guarded = lg.guard(lg.RateLimit(rps=10**6, backend=backend,
                                            refill=refill or "auto"))(noop)
            await guarded()  # connect and load the script outside the timing
            t0 = time.perf_counter()
            await asyncio.gather(*(caller(guarded, calls // width) for _ in range(width)))
            results[label].append((time.perf_counter() - t0) / calls * 1e6)
            if backend is not None:
                await backend.aclose()
    return {label: statistics.median(times) for label, times in results.items()}


def overhead_table(url: str) -> None:
    times = asyncio.run(overhead(url))
    memory = times[OVERHEAD[0][0]]
    print("\nper-call overhead (RateLimit(rps=10**6), uncontended, median of 5 x 2000 calls):")
    for label, time_ in times.items():
        print(f"  {label:<34}{time_:8.1f} us   ({time_ / memory:5.0f}x memory)")


#: (server shape, quota per minute, calls, seconds into its minute the batch starts at)
SHAPES = (("token bucket", 600, 900, 0.0), ("fixed window", 300, 450, 40.0),
          ("LiteLLM proxy", 300, 450, 40.0), ("queueing proxy", 300, 900, 40.0),
          ("sliding window", 300, 450, 0.0))


async def shared_shape(url: str, shape: str, rpm: int, calls: int, into: float,
                       refill: str) -> tuple[float, int, int, str]:
    """Two processes' RateLimit(rpm=rpm, refill=refill) over Redis, ``calls`` at once behind
    a server of ``shape``: (wall / ideal, 429s, most in one server window, shape learned)."""
    import contextvars

    from llmguard.testing import FixedWindowServer, TokenBucketServer
    from llmguard.testing._shapes import ProxyWindowServer, SlidingWindowServer

    if shape.endswith("proxy"):  # its minutes are the wall clock's: start `into` s in
        await asyncio.sleep((into - time.time() % 60.0) % 60.0)
    now = asyncio.get_running_loop().time()
    server = {"token bucket": lambda: TokenBucketServer(rpm=rpm, latency=LATENCY),
              "fixed window": lambda: FixedWindowServer(rpm=rpm, latency=LATENCY,
                                                        epoch=now - into),
              "LiteLLM proxy": lambda: ProxyWindowServer(rpm=rpm, latency=LATENCY),
              # under load: counted when one of 4 workers takes it (a 299-burst takes 30 s),
              # its headers counting answers
              "queueing proxy": lambda: ProxyWindowServer(rpm=rpm, latency=0.4, workers=4,
                                                          reports="answered"),
              "sliding window": lambda: SlidingWindowServer(rpm=rpm, latency=LATENCY)}[shape]()
    caller: contextvars.ContextVar = contextvars.ContextVar("caller")
    server.on_headers.append(lambda headers: caller.get().observe_headers(headers))
    prefix = f"bench-shapes-{uuid.uuid4().hex[:8]}"
    layers = [lg.RateLimit(rpm=rpm, refill=refill, backend=RedisBackend(url, prefix=prefix))
              for _ in range(2)]

    def guarded(layer: lg.RateLimit) -> object:
        async def ask() -> object:
            caller.set(layer)
            return await server.acompletion(messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5)
        return lg.Pipeline(layer).wrap(ask)

    calls_of = [guarded(layer) for layer in layers]
    await asyncio.gather(*(calls_of[i % 2]() for i in range(calls)), return_exceptions=True)
    wall = asyncio.get_running_loop().time() - now
    stats = server.statistics()
    learned = layers[0].statistics().shape.split(" (")[0] or "-"
    for layer in layers:
        await layer.backend.aclose()
    return wall / server.ideal_time(calls, start=now), stats.rate_limited, \
        stats.peak_window_requests, learned


def shapes_table(url: str) -> None:
    print("\ntwo processes sharing Redis, defaults, demand 1.5x the quota at once "
          "(wall / the server's ideal, 429s, most in one server window, shape learned):")
    print(f"{'server':<16}{'quota':>6}{'calls':>6}  {'default (auto)':<34}"
          f"{'refill=window (before)':<30}")
    for shape, rpm, calls, into in SHAPES:
        cells = []
        for refill in ("auto", "window"):
            ratio, refused, peak, learned = asyncio.run(
                shared_shape(url, shape, rpm, calls, into, refill))
            cells.append(f"{ratio:5.2f}x {refused:>3} 429s peak {peak:>3} {learned:<8}")
        print(f"{shape:<16}{rpm:>6}{calls:>6}  {cells[0]:<34}{cells[1]:<30}")


#: The queueing-proxy table: (quota per minute, calls, seconds into the minute each run starts)
#: per row; its contenders.
QUEUEING = ((300, 900, 40.0), (300, 900, 57.0))
QUEUEING_CONTENDERS = ("llmguard, 2 processes on Redis", "llmguard, 1 process in memory",
                       "tenacity + aiolimiter, 2 processes (quota/2 each)")


async def queueing(url: str, contender: str, rpm: int, calls: int, into: float,
                   window: float) -> tuple[float, int, int, int, str]:
    """``calls`` at once behind LiteLLM's proxy under load (a request counted when one of its 4
    workers takes it from its queue, its headers counting answers), ``into`` s into its
    minute (``window`` s: 60 real, less to compress time; llmguard's quotas then get the same
    window, its margin scaled from the default): (wall / ideal, 429s, calls failed, most in
    one server window, the shape learned). ``Retry(attempts=4)`` around each llmguard
    ``RateLimit(rpm=...)``; tenacity as the OpenAI cookbook has it (``wait_random_exponential
    (1, 60)``, 6 attempts, scaled with the window) around an ``AsyncLimiter`` per process."""
    import contextvars

    from llmguard.testing import ProxyWindowServer

    scale = window / 60.0
    await asyncio.sleep((into * scale - time.time() % window) % window)
    loop = asyncio.get_running_loop()
    server = ProxyWindowServer(rpm=rpm, latency=0.4 * scale, workers=4, reports="answered",
                               window=window)
    caller: contextvars.ContextVar = contextvars.ContextVar("caller", default=None)
    server.on_headers.append(lambda headers: caller.get() and caller.get().observe_headers(headers))
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    layers: list[lg.RateLimit] = []
    sends = []
    if contender.startswith("tenacity"):
        from aiolimiter import AsyncLimiter
        from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

        for _ in range(2):
            limiter = AsyncLimiter(rpm // 2, window)

            async def send(limiter: AsyncLimiter = limiter) -> object:
                async for attempt in AsyncRetrying(
                        wait=wait_random_exponential(min=scale, max=60 * scale),
                        stop=stop_after_attempt(6), reraise=True):
                    with attempt:
                        await limiter.acquire()
                        return await server.acompletion(**request)
                raise AssertionError("unreachable")
            sends.append(send)
    else:
        prefix = f"bench-queueing-{uuid.uuid4().hex[:8]}"
        shared = contender.endswith("Redis")
        for i in range(2 if shared else 1):
            layer = lg.RateLimit(rpm=rpm, backend=RedisBackend(url, prefix=prefix)
                                 if shared else None)
            if window != 60.0:
                margin = 0.5 * scale
                layer.quotas = (Quota(rpm, window + margin, False, learn=True, margin=margin),)
            layers.append(layer)
            guarded = lg.Pipeline(lg.Retry(attempts=4, seed=i), layer)

            async def ask(layer: lg.RateLimit = layer) -> object:
                caller.set(layer)
                return await server.acompletion(**request)
            sends.append(guarded.wrap(ask))
    start = loop.time()
    results = await asyncio.gather(*(sends[i % len(sends)]() for i in range(calls)),
                                   return_exceptions=True)
    wall = loop.time() - start
    stats = server.statistics()
    learned = layers[0].statistics().shape.split(" (")[0] if layers else "-"
    for layer in layers:
        if isinstance(layer.backend, RedisBackend):
            await layer.backend.aclose()
    failed = sum(isinstance(r, BaseException) for r in results)
    return (wall / server.ideal_time(calls, start=start), stats.rate_limited, failed,
            stats.peak_window_requests, learned)


def queueing_table(url: str, window: float = 60.0) -> None:
    print(f"\nLiteLLM's proxy under load (4 workers, counted when taken, headers counting "
          f"answers), {window:g} s minutes, demand 3x at once (wall / the server's ideal, "
          "429s, calls failed, most in one server window, shape learned):")
    print(f"{'quota':>6}{'calls':>6}{'start':>7}  " + "".join(f"{c:<46}" for c in QUEUEING_CONTENDERS))
    for rpm, calls, into in QUEUEING:
        cells = []
        for contender in QUEUEING_CONTENDERS:
            ratio, refused, failed, peak, learned = asyncio.run(
                queueing(url, contender, rpm, calls, into, window))
            cells.append(f"{ratio:5.2f}x {refused:>3} 429s {failed:>2} failed peak {peak:>3} "
                         f"{learned:<7}")
        print(f"{rpm:>6}{calls:>6}{f':{into:02.0f}':>7}  " + "".join(f"{c:<46}" for c in cells),
              flush=True)


#: The silent table: servers that say nothing of their limits (no rate-limit header, a bare
#: 429), the quota per window, and the contenders.
SILENT = ("fixed window", "sliding window", "token bucket")
SILENT_QUOTA = 30
SILENT_CONTENDERS = ("llmguard, 3 processes on Redis", "llmguard, 1 process in memory")
#: Its strict rows (as ``bench_composition.py --strict``): a token quota that binds (about 19
#: requests a window of the 30 allowed), each request charged ``STRICT_FACTOR`` times the
#: client's estimate (``len(body)//4 + max_tokens``, 10% under), 0 to ``STRICT_JITTER`` s on
#: the way to the server (a burst arrives shuffled).
STRICT_TPM, STRICT_FACTOR, STRICT_JITTER, STRICT_MAX_TOKENS = 4_500, 1 / 0.9, 0.01, 200


async def silent(url: str, shape: str, contender: str, window: float,
                 strict: bool = False, start: float = 40.0) -> tuple[float, int, int, str]:
    """3x the quota at once behind a server of ``shape`` that says nothing, ``start`` s of 60
    into its minute (``window`` s on the wall clock: a silent server is probed at the clock's
    minutes),
    every process's ``RateLimit(rpm=...)`` given that window (``strict``: ``rpm`` and ``tpm``,
    the server charging more than the estimate): (wall / ideal, 429s, calls failed, shape
    learned). ``Retry(attempts=4)`` around each."""
    import contextvars
    import random

    from llmguard.testing import FixedWindowServer, TokenBucketServer
    from llmguard.testing._shapes import SlidingWindowServer

    await asyncio.sleep((window * start / 60 - time.time() % window) % window)
    loop = asyncio.get_running_loop()
    options = {"rpm": SILENT_QUOTA, "window": window, "latency": 0.02,
               "rate_limit_headers": False, "retry_after": False}
    if strict:
        options.update(tpm=STRICT_TPM, charge_factor=STRICT_FACTOR)
    server = {"fixed window": lambda: FixedWindowServer(
                  epoch=loop.time() - time.time() % window, **options),
              "sliding window": lambda: SlidingWindowServer(**options),
              "token bucket": lambda: TokenBucketServer(**options)}[shape]()
    caller: contextvars.ContextVar = contextvars.ContextVar("caller")
    server.on_headers.append(lambda headers: caller.get().observe_headers(headers))
    prefix, margin = f"bench-silent-{uuid.uuid4().hex[:8]}", 0.05
    tpm = STRICT_TPM if strict else None
    layers = [lg.RateLimit(rpm=SILENT_QUOTA, tpm=tpm, backend=RedisBackend(url, prefix=prefix))
              if contender.endswith("Redis") else lg.RateLimit(rpm=SILENT_QUOTA, tpm=tpm)
              for _ in range(3 if contender.endswith("Redis") else 1)]
    quotas = (Quota(SILENT_QUOTA, window + margin, False, learn=True, margin=margin),)
    if strict:
        quotas += (Quota(STRICT_TPM, window + margin, True, learn=True, margin=margin),)
    rng, sends = random.Random(7), []
    for layer in layers:
        layer.quotas = quotas

        async def ask(layer: lg.RateLimit = layer, **kwargs: object) -> object:
            caller.set(layer)
            if strict:
                await asyncio.sleep(rng.uniform(0, STRICT_JITTER))
            return await server.acompletion(**kwargs)
        sends.append(lg.Pipeline(lg.Retry(attempts=4), layer).wrap(ask))
    messages = [{"role": "user", "content": "hi"}]
    max_tokens = STRICT_MAX_TOKENS if strict else 5
    charged = server.charge(messages=messages, max_tokens=max_tokens)
    quota = min(SILENT_QUOTA, STRICT_TPM // charged) if strict else SILENT_QUOTA
    calls, start = 3 * quota, loop.time()
    results = await asyncio.gather(*(sends[i % len(sends)](messages=messages,
                                                           max_tokens=max_tokens)
                                     for i in range(calls)), return_exceptions=True)
    wall = loop.time() - start
    learned = ",".join(sorted({layer.statistics().shape.split(" (")[0] for layer in layers}))
    if strict:
        factors = {f"{charge_of(layer).factor:.3f}" for layer in layers}
        learned += " x" + ",".join(sorted(factors))
    for layer in layers:
        if isinstance(layer.backend, RedisBackend):
            await layer.backend.aclose()
    failed = sum(isinstance(r, BaseException) for r in results)
    return (wall / server.ideal_time(calls, tokens=charged, start=start),
            server.statistics().rate_limited, failed, learned)


def charge_of(layer: lg.RateLimit) -> object:
    """The charge factor ``layer``'s window holds (under Redis, its process's mirror's)."""
    backend = layer.backend._local if isinstance(layer.backend, RedisBackend) else layer.backend
    return backend._windows[None].charge


def silent_table(url: str, window: float = 10.0, start: float = 40.0) -> None:
    print(f"\nservers that say nothing (no rate-limit header, a bare 429), {window:g} s windows "
          f"on the wall clock, quota {SILENT_QUOTA}, demand 3x at once from :{start:02g} (wall / the "
          "server's ideal, 429s, calls failed, shape learned; strict: the token quota binds, "
          f"{STRICT_TPM:,} a window, each request charged {STRICT_FACTOR:.3f}x the estimate, "
          "and the charge factor each process holds at the end):")
    print(f"{'server':<24}" + "".join(f"{c:<44}" for c in SILENT_CONTENDERS))
    for strict in (False, True):
        for shape in SILENT:
            cells = []
            for contender in SILENT_CONTENDERS:
                ratio, refused, failed, learned = asyncio.run(
                    silent(url, shape, contender, window, strict, start))
                cells.append(f"{ratio:5.2f}x {refused:>2} 429s {failed:>2} failed {learned:<16}")
            name = f"{'strict ' if strict else ''}{shape}"
            print(f"{name:<24}" + "".join(f"{c:<44}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--shapes-only", action="store_true",
                        help="only the table of learned shapes shared through Redis")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the per-call overhead table")
    parser.add_argument("--queueing-only", action="store_true",
                        help="only the queueing-proxy table (two processes, one, tenacity)")
    parser.add_argument("--silent-only", action="store_true",
                        help="only the table of servers that say nothing (3 processes, one)")
    parser.add_argument("--window", type=float, default=None,
                        help="the queueing-proxy table's minute, seconds (less compresses it; "
                             "default 60), or the silent table's (default 10)")
    parser.add_argument("--start", type=float, default=40.0,
                        help="the silent table's start, seconds of a 60 s minute (scaled to "
                             "--window; default 40: :40)")
    args = parser.parse_args()
    if not 0.0 <= args.start < 60.0:
        parser.error(f"--start must be within [0, 60) seconds of the minute, not {args.start:g}")
    if args.queueing_only:
        queueing_table(args.url, args.window or 60.0)
        return
    if args.silent_only:
        silent_table(args.url, args.window or 10.0, args.start)
        return
    if args.overhead_only:
        overhead_table(args.url)
        return
    if args.shapes_only:
        shapes_table(args.url)
        return
    quota = RPM * DURATION / WINDOW
    print(f"{PROCESSES} processes x {CALLERS} callers, quota {RPM} requests / {TPM} tokens per "
          f"{WINDOW:g} s window (scaled from 60 s), {DURATION:g} s each; {TOKENS} tokens/call\n")
    print(f"{'contender':<22}{'provider OK':>12}{'429s':>8}{'quota used':>12}")
    for mode in ("redis", "local, full quota", "local, quota/4"):
        ok, rejected = contend(args.url, mode)
        print(f"{mode:<22}{ok:>12}{rejected:>8}{ok / quota:>11.1%}")
    overhead_table(args.url)
    shapes_table(args.url)
    queueing_table(args.url, args.window or 60.0)
    silent_table(args.url)


if __name__ == "__main__":
    main()
