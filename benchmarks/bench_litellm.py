"""llmguard around ``litellm.acompletion`` versus LiteLLM's own ``Router``, in one run.

Both are configured for the same job: 2 deployments (a primary model and a fallback model),
2 retries, and answers from ``mock_response`` (no network). Measured against a bare
``litellm.acompletion`` call:

- added latency per call (median us over the bare call, calls one after another);
- calls per second with ``--concurrency`` calls in flight.

    python benchmarks/bench_litellm.py [--calls 300] [--repeats 5] [--concurrency 50]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import litellm
from litellm import Router

import llmguard as lg
from llmguard.integrations import litellm as lg_litellm

PRIMARY, SECONDARY = "gpt-4o-mini", "gpt-4o"
MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in one sentence."}]
MOCK = "A prince avenges his father and everybody dies."


def contenders() -> dict[str, Callable[[], Awaitable[Any]]]:
    async def bare() -> Any:
        return await litellm.acompletion(model=PRIMARY, messages=MESSAGES, mock_response=MOCK)

    pipeline = lg.Pipeline(name="chat")
    try:  # Retry and Fallback, when this tree has them (they land from another branch)
        pipeline = pipeline.fallback({"model": SECONDARY}).retry(attempts=3)
        layers = "Fallback(model) + Retry(3)"
    except ImportError:
        layers = "(no Retry/Fallback in this tree)"
    pipeline = pipeline.rate_limit(rpm=10_000_000).concurrency_limit(10_000)
    chat = lg_litellm.completion(pipeline)

    async def guarded() -> Any:
        return await chat(model=PRIMARY, messages=MESSAGES, mock_response=MOCK)

    router = Router(
        model_list=[
            {"model_name": "primary", "litellm_params": {"model": PRIMARY, "mock_response": MOCK}},
            {"model_name": "secondary", "litellm_params": {"model": SECONDARY, "mock_response": MOCK}},
        ],
        num_retries=2,
        fallbacks=[{"primary": ["secondary"]}],
    )

    async def routed() -> Any:
        return await router.acompletion(model="primary", messages=MESSAGES)

    return {
        "bare litellm.acompletion": bare,
        f"llmguard: {layers} + RateLimit + ConcurrencyLimit": guarded,
        "litellm Router (2 deployments, num_retries=2, fallbacks)": routed,
    }


async def sequential(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6


async def throughput(fn: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await fn()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - start)


async def main(calls: int, repeats: int, concurrency: int) -> None:
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM Router").setLevel(logging.ERROR)
    runs = contenders()
    for fn in runs.values():  # warm up imports, tokenizers, the cost map
        for _ in range(20):
            await fn()
    latency: dict[str, list[float]] = {name: [] for name in runs}
    rate: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so machine noise hits every contender alike
        for name, fn in runs.items():
            latency[name].append(await sequential(fn, calls))
            rate[name].append(await throughput(fn, calls, concurrency))
    bare = statistics.median(latency["bare litellm.acompletion"])
    print(f"{calls} calls x {repeats} repeats, medians; throughput with {concurrency} in flight\n")
    print(f"| {'contender':58} | us/call | added us | calls/s |")
    print(f"|{'-' * 60}|--------:|---------:|--------:|")
    for name in runs:
        us = statistics.median(latency[name])
        print(f"| {name:58} | {us:7.0f} | {us - bare:8.0f} | {statistics.median(rate[name]):7.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats, args.concurrency))
