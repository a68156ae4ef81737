"""The recommended llmguard stack against what users assemble without it, in one run (issue #22).

Every contender runs in this process, interleaved per repeat (machine noise hits all alike),
rebuilt fresh for every sample (empty caches, windows and queues); figures are medians.

Contenders, all around the same ``send_message(prompt)`` that returns an OpenAI-shaped dict
after suspending once (``await asyncio.sleep(0)``, like any network call; without a suspension
a concurrency limit is never contended):

- bare ``await send_message(prompt)``;
- the seed documents' hand-written stack: ``asyncio.Semaphore`` + a retry loop + a dict cache
  with timestamps + dataclass counters (keys on the raw prompt);
- libraries: cachetools ``TTLCache`` + tenacity ``@retry`` + ``asyncio.timeout`` per attempt +
  aiolimiter (one limiter for requests, one for tokens) + ``asyncio.Semaphore``;
- the same + three OTel SDK instruments (calls counter, duration and token histograms; an SDK
  ``MeterProvider`` with an ``InMemoryMetricReader``);
- llmguard's recommended stack: Metrics, Cache, Fallback, Retry, CircuitBreaker, Timeout,
  RateLimit, ConcurrencyLimit; without an SDK (the global OTel API) and with one (as above);
- LiteLLM's ``Router`` with ``mock_response`` (reference only: its own floor is far higher).

Paths: sequential misses (a distinct prompt per call), ``--concurrent`` misses started at once
under ``asyncio.gather`` (the concurrency limit is 100, so most of them queue), and repeated hits
of one prompt. "over bare" is the per-call cost minus the bare await's in the same path; ratios
of overheads are what the targets of #22 and #36 speak of. Samples are timed in this process's
CPU time (``--wall`` for wall time): the machine may be shared, and every path is CPU-bound.

Also: each llmguard layer alone over the bare await (and the composition itself: an empty
pipeline, pass-through custom layers; this covers bench_overhead.py); bytes per waiting call with ``--waiters``
callers queued on one limiter (tracemalloc, beyond a task that awaits a future itself); and the
time of ``import llmguard`` (fresh interpreters, median).

    python benchmarks/bench_stack.py            # a few minutes
    python benchmarks/bench_stack.py --quick    # under a minute, rougher

The garbage collector runs while timing (``--gc-off`` to stop it): what a contender allocates
per call costs collections, and with 10k live tasks under ``gather`` they are not cheap. What
exists before a sample is frozen out of the collector (``gc.freeze``), so the heap left by
imports and earlier samples does not make later samples dearer.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

import argparse
import asyncio
import gc
import logging
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree, not an install

import cachetools  # noqa: E402
import tenacity  # noqa: E402
from aiolimiter import AsyncLimiter  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

import llmguard as lg  # noqa: E402
from llmguard.backends import ConcurrencyLimiter  # noqa: E402

Fn = Callable[[str], Awaitable[Any]]

RESULT = {
    "id": "chatcmpl-bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Paris."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
MODEL = "gpt-4o-mini"
LIMIT = 100  # concurrency limit of every stack
ATTEMPTS = 3
TIMEOUT = 30.0
TTL = 300.0
MAXSIZE = 10_000
RPM = 100_000_000  # quotas that never bind: the admission bookkeeping is what is measured
TPM = 10**12
# The GenAI semantic conventions' attributes and bucket boundaries (what Metrics records).
ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": MODEL}
INPUT = {**ATTRS, "gen_ai.token.type": "input"}
OUTPUT = {**ATTRS, "gen_ai.token.type": "output"}
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864]


async def send_message(prompt: str) -> dict[str, Any]:
    await asyncio.sleep(0)  # one suspension, like the network round trip of a real call
    return RESULT


async def backup_message(prompt: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return RESULT


def sdk_provider() -> MeterProvider:
    return MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)


# --- contenders ----------------------------------------------------------------------------


def bare() -> Fn:
    return send_message


@dataclass
class SeedMetrics:
    """The seed documents' ``Metrics`` dataclass (Monitoring, Pattern 1)."""

    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    total_time: float = 0.0
    min_time: float = float("inf")
    max_time: float = 0.0


def hand_written() -> Fn:
    """The seed documents' patterns stacked: dict cache with timestamps (CachedAgent), counters
    (MonitoredAgent), a semaphore (rate_limited_queries) and a backoff loop (retry_with_backoff)."""
    semaphore = asyncio.Semaphore(LIMIT)
    cache: dict[str, Any] = {}
    timestamps: dict[str, float] = {}
    metrics = SeedMetrics()

    async def query(prompt: str) -> Any:
        if prompt in cache:
            if time.time() - timestamps[prompt] < TTL:
                return cache[prompt]
            del cache[prompt]
            del timestamps[prompt]
        start = time.time()
        metrics.total_requests += 1
        try:
            async with semaphore:
                for attempt in range(ATTEMPTS):
                    try:
                        response = await send_message(prompt)
                        break
                    except Exception:
                        if attempt == ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.1 * 2**attempt)
            metrics.successful_requests += 1
        except Exception:
            metrics.failed_requests += 1
            raise
        finally:
            elapsed = time.time() - start
            metrics.total_time += elapsed
            metrics.min_time = min(metrics.min_time, elapsed)
            metrics.max_time = max(metrics.max_time, elapsed)
        cache[prompt] = response
        timestamps[prompt] = time.time()
        return response

    return query


def libraries(meter_provider: MeterProvider | None = None) -> Fn:
    """What a careful user assembles from libraries: TTLCache outside tenacity's retry, each
    attempt bounded by asyncio.timeout, admitted by aiolimiter (requests and estimated tokens),
    then a semaphore; optionally three OTel SDK instruments around it all."""
    cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=MAXSIZE, ttl=TTL)
    requests, tokens = AsyncLimiter(RPM, 60), AsyncLimiter(TPM, 60)
    semaphore = asyncio.Semaphore(LIMIT)

    @tenacity.retry(stop=tenacity.stop_after_attempt(ATTEMPTS), reraise=True,
                    wait=tenacity.wait_random_exponential(multiplier=0.5, max=30))
    async def attempt(prompt: str) -> Any:
        async with asyncio.timeout(TIMEOUT):
            await requests.acquire()
            await tokens.acquire(len(prompt) // 4 + 256)
            async with semaphore:
                return await send_message(prompt)

    async def cached(prompt: str) -> Any:
        result = cache.get(prompt)
        if result is not None:
            return result
        result = cache[prompt] = await attempt(prompt)
        return result

    if meter_provider is None:
        return cached
    meter = meter_provider.get_meter("bench")
    calls = meter.create_counter("llm.calls")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                      explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                   explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    failed = {**ATTRS, "error.type": "error"}

    async def observed(prompt: str) -> Any:
        start = time.perf_counter()
        try:
            result = await cached(prompt)
        except Exception:
            calls.add(1, failed)
            duration.record(time.perf_counter() - start, failed)
            raise
        duration.record(time.perf_counter() - start, ATTRS)
        counts = result["usage"]
        usage.record(counts["prompt_tokens"], INPUT)
        usage.record(counts["completion_tokens"], OUTPUT)
        calls.add(1, ATTRS)
        return result

    return observed


def llmguard_stack(meter_provider: MeterProvider | None = None) -> Fn:
    """The README's recommended order, every layer on."""
    metrics: dict[str, Any] = {"provider": "openai", "model": MODEL}
    if meter_provider is not None:
        metrics["meter_provider"] = meter_provider
    return (
        lg.Pipeline(name="chat")
        .metrics(**metrics)
        .cache(ttl=TTL, maxsize=MAXSIZE)
        .fallback(backup_message)
        .retry(attempts=ATTEMPTS)
        .circuit_breaker()
        .timeout(TIMEOUT)
        .rate_limit(rpm=RPM, tpm=TPM)
        .concurrency_limit(LIMIT)
        .wrap(send_message)
    )


def litellm_router() -> Fn | None:
    try:
        import litellm
        from litellm import Router
    except ImportError:
        return None
    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    router = Router(
        model_list=[{"model_name": "chat",
                     "litellm_params": {"model": MODEL, "mock_response": "Paris."}}],
        num_retries=ATTEMPTS - 1, timeout=TIMEOUT,
    )  # no cache_responses: litellm's cache-hit path imports its proxy (fastapi), not installed

    async def routed(prompt: str) -> Any:
        return await router.acompletion(model="chat",
                                        messages=[{"role": "user", "content": prompt}])

    return routed


BARE = "bare await send_message()"
HAND = "hand-written (seed documents)"
LIBS = "tenacity+aiolimiter+Semaphore+TTLCache"
LIBS_OTEL = "  + 3 OTel SDK instruments"
LG = "llmguard 8-layer stack"
LG_OTEL = "  + OTel SDK MeterProvider"
LITELLM = "LiteLLM Router (mock_response)"

STACKS: dict[str, Callable[[], Fn | None]] = {
    BARE: bare,
    HAND: hand_written,
    LIBS: libraries,
    LIBS_OTEL: lambda: libraries(sdk_provider()),
    LG: llmguard_stack,
    LG_OTEL: lambda: llmguard_stack(sdk_provider()),
    LITELLM: litellm_router,
}


def layer_alone(layer: Callable[[], Any]) -> Callable[[], Fn]:
    return lambda: lg.guard(layer())(send_message)


def hand_decorator() -> Fn:
    async def wrapper(prompt: str) -> Any:
        return await send_message(prompt)

    return wrapper


class PassThrough:
    """A custom layer that does nothing: the cost of composition itself."""

    async def __call__(self, call: lg.Call, call_next: lg.Handler) -> Any:
        return await call_next(call)


LAYERS: dict[str, Callable[[], Fn]] = {
    BARE: bare,
    "hand-written pass-through decorator": hand_decorator,
    "empty Pipeline().wrap()": lambda: lg.Pipeline().wrap(send_message),
    "1 pass-through custom layer": layer_alone(PassThrough),
    "3 pass-through custom layers": lambda: lg.guard(PassThrough(), PassThrough(),
                                                     PassThrough())(send_message),
    "Metrics (global API, no SDK)": layer_alone(lambda: lg.Metrics(provider="openai", model=MODEL)),
    "Metrics (SDK MeterProvider)": layer_alone(
        lambda: lg.Metrics(provider="openai", model=MODEL, meter_provider=sdk_provider())),
    "Cache (miss)": layer_alone(lambda: lg.Cache(ttl=TTL, maxsize=MAXSIZE)),
    "Fallback(backup)": layer_alone(lambda: lg.Fallback(backup_message)),
    "Retry(attempts=3)": layer_alone(lambda: lg.Retry(attempts=ATTEMPTS)),
    "CircuitBreaker()": layer_alone(lg.CircuitBreaker),
    "Timeout(30)": layer_alone(lambda: lg.Timeout(TIMEOUT)),
    "RateLimit(rpm, tpm)": layer_alone(lambda: lg.RateLimit(rpm=RPM, tpm=TPM)),
    "ConcurrencyLimit(100)": layer_alone(lambda: lg.ConcurrencyLimit(LIMIT)),
    "AdaptiveConcurrency()": layer_alone(lg.AdaptiveConcurrency),
}


# --- timing --------------------------------------------------------------------------------


#: What a sample is timed with: this process's CPU time by default (the machine is shared: wall
#: time also counts the time other processes held the core; every path here is CPU-bound, the
#: provider answers after one loop turn), ``--wall`` for wall time.
TIMER = time.process_time


async def run_sequential(fn: Fn, prompts: list[str]) -> float:
    start = TIMER()
    for prompt in prompts:
        await fn(prompt)
    return (TIMER() - start) / len(prompts) * 1e6


async def run_gather(fn: Fn, prompts: list[str]) -> float:
    start = TIMER()
    await asyncio.gather(*(fn(prompt) for prompt in prompts))
    return (TIMER() - start) / len(prompts) * 1e6


async def run_hits(fn: Fn, prompts: list[str]) -> float:
    prompt = prompts[0]
    await fn(prompt)  # the one miss that fills the cache
    start = TIMER()
    for _ in prompts:
        await fn(prompt)
    return (TIMER() - start) / len(prompts) * 1e6


#: ``--gc-off``: no collection while timing. By default the collector runs as in production,
#: so what a contender allocates per call is charged (10k live tasks make collections dear).
GC_OFF = False

PATHS = {"seq": run_sequential, "gather": run_gather, "hit": run_hits}


def progress(what: str) -> None:
    print(f"  ... {what}", file=sys.stderr, flush=True)


async def sample(build: Callable[[], Fn | None], path: str, prompts: list[str]) -> float | None:
    """One measurement on a freshly built contender (warmed up on other prompts first)."""
    fn = build()
    if fn is None:
        return None
    for i in range(20):
        await fn(f"warm-up {i}")
    # What exists now (this contender's state; earlier samples' contenders are garbage by now:
    # the global OTel API holds Metrics layers weakly, tests/observability/test_metrics.py) is
    # moved out of the collector's sight, so collections while timing walk only what the calls
    # allocate, and every sample starts from the same collector state.
    gc.collect()
    gc.freeze()
    if GC_OFF:
        gc.disable()
    try:
        return await PATHS[path](fn, prompts)
    finally:
        gc.enable()


def prompts_for(n: int) -> list[str]:
    return [f"Question {i}: what is the capital of France?" for i in range(n)]


async def measure(contenders: dict[str, Callable[[], Fn | None]], sizes: dict[str, int],
                  repeats: int, reduced: dict[str, dict[str, int]] | None = None,
                  ) -> dict[str, dict[str, float | None]]:
    """Median us/call per contender and path; ``reduced`` gives some contenders smaller sizes."""
    reduced = reduced or {}
    samples: dict[str, dict[str, list[float]]] = {n: {p: [] for p in sizes} for n in contenders}
    skipped: set[str] = set()
    for repeat in range(repeats):  # interleaved: drifting load hits every contender alike
        progress(f"repeat {repeat + 1}/{repeats}")
        for path, n in sizes.items():
            for name, build in contenders.items():
                if name in skipped:
                    continue
                size = reduced.get(name, {}).get(path, n)
                if size <= 0:
                    continue
                value = await sample(build, path, prompts_for(size))
                if value is None:
                    skipped.add(name)
                else:
                    samples[name][path].append(value)
    return {name: {p: statistics.median(v) if v else None for p, v in paths.items()}
            for name, paths in samples.items()}


# --- memory per waiter ---------------------------------------------------------------------


async def waiter_bytes(n: int, setup: Callable[[asyncio.Future[None]], Fn]) -> float:
    """Traced bytes per task of ``n`` tasks each calling ``setup(hold)(prompt)`` once all but the
    first are queued (the first holds what it took until ``hold`` is set)."""
    loop = asyncio.get_running_loop()
    hold: asyncio.Future[None] = loop.create_future()
    fn = setup(hold)
    prompt = "Question: what is the capital of France?"
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [loop.create_task(fn(prompt)) for _ in range(n)]
        for _ in range(3):
            await asyncio.sleep(0)  # every task runs to where it waits
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for task in tasks[1:]:  # waiters first, oldest first (the cheap order), then the holder
        task.cancel()
    await asyncio.sleep(0)
    if not hold.done():
        hold.set_result(None)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (after - before) / n


def holding(hold: asyncio.Future[None]) -> Callable[[str], Awaitable[Any]]:
    async def provider(prompt: str) -> Any:
        await hold
        return RESULT

    return provider


def own_task(hold: asyncio.Future[None]) -> Fn:
    async def caller(prompt: str) -> None:
        await asyncio.get_running_loop().create_future()  # what any waiter needs at least

    return caller


def semaphore_waiters(hold: asyncio.Future[None]) -> Fn:
    semaphore = asyncio.Semaphore(1)
    provider = holding(hold)

    async def caller(prompt: str) -> Any:
        async with semaphore:
            return await provider(prompt)

    return caller


def aiolimiter_waiters(hold: asyncio.Future[None]) -> Fn:
    limiter = AsyncLimiter(1, 60)

    async def caller(prompt: str) -> Any:
        async with limiter:
            return RESULT

    return caller


def limiter_waiters(hold: asyncio.Future[None]) -> Fn:
    limiter = ConcurrencyLimiter(1)
    provider = holding(hold)

    async def caller(prompt: str) -> Any:
        async with limiter:
            return await provider(prompt)

    return caller


WAITERS: dict[str, Callable[[asyncio.Future[None]], Fn]] = {
    "a task awaiting its own future (own task)": own_task,
    "asyncio.Semaphore(1)": semaphore_waiters,
    "aiolimiter AsyncLimiter(1, 60)": aiolimiter_waiters,
    "lg.ConcurrencyLimiter(1) (async with)": limiter_waiters,
    "ConcurrencyLimit(1) layer, guarded call": lambda hold: lg.guard(lg.ConcurrencyLimit(1))(
        holding(hold)),
    "RateLimit(rpm=1) layer, guarded call": lambda hold: lg.guard(lg.RateLimit(rpm=1))(
        send_message),
}
OWN = next(iter(WAITERS))


async def memory_table(n: int, repeats: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in WAITERS}
    for _ in range(repeats):
        for name, setup in WAITERS.items():
            samples[name].append(await waiter_bytes(n, setup))
    return {name: statistics.median(values) for name, values in samples.items()}


# --- import time ---------------------------------------------------------------------------


def import_ms(runs: int) -> float:
    code = "import time; t = time.perf_counter(); import llmguard; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout
        times.append(float(out.strip()) * 1e3)
    return statistics.median(times)


# --- report --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def fmt(value: float | None, spec: str = "8.1f") -> str:
    return f"{value:{spec}}" if value is not None else f"{'n/a':>{len(format(0.0, spec))}}"


def print_stacks(results: dict[str, dict[str, float | None]], sizes: dict[str, int],
                 litellm_sizes: dict[str, int]) -> dict[str, float]:
    base = results[BARE]
    over = {name: {p: (v - base[p]) if v is not None and p != "hit" else None
                   for p, v in paths.items()} for name, paths in results.items()}
    libs, libs_otel, hand_hit = over[LIBS], over[LIBS_OTEL], results[HAND]["hit"]

    def vs(name: str, path: str) -> float | None:
        ref = libs_otel if name in (LIBS_OTEL, LG_OTEL) else libs
        value = over[name][path]
        if name == BARE:
            return None
        return value / ref[path] if value is not None and ref[path] else None

    print(f"sequential misses: {sizes['seq']} calls; gather: {sizes['gather']} concurrent misses "
          f"(limit {LIMIT}); hits: {sizes['hit']} calls on one prompt "
          f"(LiteLLM: {litellm_sizes['seq']} / {litellm_sizes['gather']}, no cache)")
    print("us/call medians; 'over' = minus the bare await in the same path; 'x lib' = overhead "
          "over the library stack's (rows with the SDK: over the library stack + SDK)\n")
    print(f"| {'contender':40} | seq us | over | x lib | gather us | over | x lib "
          f"| hit us | x hand | x lib |")
    print(f"|{'-' * 42}|-------:|-----:|------:|----------:|-----:|------:|-------:|-------:|------:|")
    for name, paths in results.items():
        hit = paths["hit"]
        hit = None if name == BARE else hit
        print(f"| {name:40} | {fmt(paths['seq'], '6.1f')} | {fmt(over[name]['seq'], '4.0f')} "
              f"| {fmt(vs(name, 'seq'), '5.2f')} | {fmt(paths['gather'], '9.1f')} "
              f"| {fmt(over[name]['gather'], '4.0f')} | {fmt(vs(name, 'gather'), '5.2f')} "
              f"| {fmt(hit, '6.2f')} "
              f"| {fmt(hit / hand_hit if hit is not None else None, '6.2f')} "
              f"| {fmt(hit / results[LIBS]['hit'] if hit is not None else None, '5.2f')} |")
    return {
        "seq": vs(LG, "seq"), "gather": vs(LG, "gather"),
        "seq_otel": vs(LG_OTEL, "seq"), "gather_otel": vs(LG_OTEL, "gather"),
        "hit": results[LG]["hit"] / hand_hit,
        "hit_lib": results[LG]["hit"] / results[LIBS]["hit"],
    }


def print_layers(results: dict[str, dict[str, float | None]], sizes: dict[str, int]) -> list[str]:
    base = results[BARE]
    misses = []
    print(f"\nEach llmguard layer alone over the bare await ({sizes['seq']} sequential misses; "
          f"{sizes['gather']} under gather), us/call medians\n")
    print(f"| {'layer':40} | seq us | over bare | gather us | over bare | target (seq) |")
    print(f"|{'-' * 42}|-------:|----------:|----------:|----------:|:-------------|")
    for name, paths in results.items():
        seq_over = paths["seq"] - base["seq"]
        gather_over = paths["gather"] - base["gather"]
        if name == BARE or "hand-written" in name or "pass-through" in name:
            target = ""
        elif name.startswith("empty"):
            target = f"< 1 us {verdict(seq_over < 1)}"
        elif "SDK MeterProvider" in name:
            target = "(recording cost)"
        else:
            target = f"<= 3 us {verdict(seq_over <= 3)}"
        if "MISS" in target:
            misses.append(name)
        print(f"| {name:40} | {paths['seq']:6.2f} | {seq_over:9.2f} | {paths['gather']:9.2f} "
              f"| {gather_over:9.2f} | {target:12} |")
    return misses


def print_memory(memory: dict[str, float], n: int) -> dict[str, float]:
    own = memory[OWN]
    print(f"\nMemory per waiting call: {n} callers queued on one limiter (tracemalloc, median)\n")
    print(f"| {'what the callers wait on':48} | bytes/waiter | beyond own task | target |")
    print(f"|{'-' * 50}|-------------:|----------------:|:-------|")
    beyond = {}
    for name, value in memory.items():
        extra = value - own
        target = ""
        if "layer" in name:
            beyond[name] = extra
            target = f"< 1 KB {verdict(extra < 1024)}"
        print(f"| {name:48} | {value:12.0f} | {extra if name != OWN else 0:15.0f} | {target:6} |")
    return beyond


async def main(args: argparse.Namespace) -> None:
    global GC_OFF, TIMER
    GC_OFF = args.gc_off
    if args.wall:
        TIMER = time.perf_counter
    sizes = {"seq": args.calls, "gather": args.concurrent, "hit": args.hits}
    litellm_sizes = {p: min(n, args.litellm_calls) for p, n in sizes.items()}
    litellm_sizes["hit"] = 0  # Router without a cache (see litellm_router)
    started = time.perf_counter()
    stacks = dict(STACKS)
    if args.skip_litellm:
        stacks[LITELLM] = lambda: None
    for build in (*stacks.values(), *LAYERS.values()):  # imports (litellm: seconds), caches
        build()
    # Everything imported so far is immortal from here: a full collection (before each sample,
    # and the ones allocation triggers while timing) then walks only what the samples made, not
    # litellm's modules; otherwise its cost grows with what happens to be imported.
    gc.collect()
    gc.freeze()
    progress("stacks")
    results = await measure(stacks, sizes, args.repeats, {LITELLM: litellm_sizes})
    ratios = print_stacks(results, sizes, litellm_sizes)
    print("\nTargets (#36; #22's for the SDK rows):")
    print(f"- full stack, no SDK, seq:     <= 0.5x libraries' overhead:  {ratios['seq']:.2f}x "
          f"{verdict(ratios['seq'] <= 0.5)}")
    print(f"- full stack, no SDK, gather:  <= 0.5x libraries' overhead:  {ratios['gather']:.2f}x "
          f"{verdict(ratios['gather'] <= 0.5)}")
    print(f"- full stack + SDK, seq:       <= 0.5x libraries + SDK:      {ratios['seq_otel']:.2f}x "
          f"{verdict(ratios['seq_otel'] <= 0.5)}")
    print(f"- full stack + SDK, gather:    <= 0.5x libraries + SDK:      "
          f"{ratios['gather_otel']:.2f}x {verdict(ratios['gather_otel'] <= 0.5)}")
    print(f"- hit path:                    <= 2x the library stack's hit: {ratios['hit_lib']:.2f}x "
          f"{verdict(ratios['hit_lib'] <= 2)}")
    if args.skip_layers:
        print(f"\n({args.repeats} repeats, {'wall' if args.wall else 'CPU'} time, garbage "
              f"collector {'off' if GC_OFF else 'on'} while timing, "
              f"{time.perf_counter() - started:.0f} s)")
        return
    layer_sizes = {"seq": args.calls, "gather": args.concurrent}
    progress("per-layer table")
    layers = await measure(LAYERS, layer_sizes, args.repeats)
    progress(f"memory: {args.waiters} waiters")
    memory = await memory_table(args.waiters, args.memory_repeats)
    progress("import time")
    import_time = import_ms(args.import_runs)

    layer_misses = print_layers(layers, layer_sizes)
    beyond = print_memory(memory, args.waiters)
    print(f"\nimport llmguard: {import_time:.1f} ms (median of {args.import_runs} fresh "
          f"interpreters)")
    miss = layers["Cache (miss)"]["seq"] - layers[BARE]["seq"]
    print(f"- cache miss over the bare await: <= 6 us: {miss:.1f} us {verdict(miss <= 6)}")
    print(f"- every layer <= 3 us (not Metrics+SDK), empty < 1 us: "
          f"{verdict(not layer_misses)}{': ' + ', '.join(layer_misses) if layer_misses else ''}")
    worst = max(beyond.values())
    print(f"- waiter memory < 1 KB beyond own task: worst {worst:.0f} B {verdict(worst < 1024)}")
    print(f"- import llmguard < 50 ms:     {import_time:.1f} ms {verdict(import_time < 50)}")
    print(f"\n({args.repeats} repeats, {'wall' if args.wall else 'CPU'} time, garbage collector "
          f"{'off' if GC_OFF else 'on'} while timing, {time.perf_counter() - started:.0f} s)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats (< 1 min)")
    parser.add_argument("--calls", type=int, help="sequential calls per sample (default 5000)")
    parser.add_argument("--concurrent", type=int, help="calls under gather (default 10000)")
    parser.add_argument("--hits", type=int, help="repeated hits per sample (default 20000)")
    parser.add_argument("--repeats", type=int, help="samples per contender (default 7)")
    parser.add_argument("--waiters", type=int, help="queued callers (default 100000)")
    parser.add_argument("--memory-repeats", type=int, help="samples of the memory table (1: it hardly varies)")
    parser.add_argument("--litellm-calls", type=int, help="cap on LiteLLM's sizes (default 300: ~5 ms a call)")
    parser.add_argument("--import-runs", type=int, help="fresh interpreters (default 7)")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-layers", action="store_true", help="only the stacks table")
    parser.add_argument("--wall", action="store_true",
                        help="time samples by wall clock (default: this process's CPU time)")
    parser.add_argument("--gc-off", action="store_true",
                        help="disable the garbage collector while timing (steadier attribution; "
                             "hides the collections a contender's allocations cause)")
    args = parser.parse_args(argv)
    defaults = ({"calls": 1000, "concurrent": 5000, "hits": 5000, "repeats": 3,
                 "waiters": 10_000, "memory_repeats": 1, "litellm_calls": 30, "import_runs": 3}
                if args.quick else
                {"calls": 5000, "concurrent": 10_000, "hits": 20_000, "repeats": 7,
                 "waiters": 100_000, "memory_repeats": 1, "litellm_calls": 300,
                 "import_runs": 7})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
