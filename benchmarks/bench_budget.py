"""A burst against a spend cap: llmguard's Budget versus LiteLLM's budget, side by side.

1,000 chat calls start at once; their cost at list price (gpt-4o-mini in litellm's cost map) is
about 3x the cap. Answers come from litellm's ``mock_response`` after ``mock_delay`` seconds
(no network). The bill is what litellm prices each answer at (``completion_cost``), summed over
the calls that were answered: what the provider would charge.

- **llmguard**: ``Budget(cap)`` (litellm's prices) in a pipeline around ``litellm.acompletion``
  (``llmguard.integrations.litellm``): each call reserves its maximum cost before it is sent.
- **LiteLLM Router, provider budget**: ``Router(provider_budget_config={"openai":
  {"budget_limit": cap, "time_period": "1d"}})``, LiteLLM's in-process budget: before each call
  it compares the spend recorded so far with the limit, and records each answer's cost after it
  (the same check-then-record design as its proxy's key ``max_budget``).

LiteLLM's proxy itself is not run: key budgets need virtual keys, which need its Postgres
database, and ``litellm[proxy]`` in a venv of its own; the Router's budget is the same logic in
process, so the comparison is of the design, not of HTTP overhead. Every burst runs in a fresh
process: LiteLLM keeps provider spend in process-wide state that a new Router does not reset.

    python benchmarks/bench_budget.py [--calls 1000] [--repeats 3] [--delay 0.2]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import litellm
from litellm import Router

import llmguard as lg
from llmguard.integrations import litellm as lg_litellm

MODEL = "gpt-4o-mini"
MOCK = "word " * 50  # about 50 output tokens of the 60 allowed
MAX_TOKENS = 60


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i % 10} about the budget " * 6}]


def one_call_cost() -> float:
    response = litellm.completion(model=MODEL, messages=messages(0), mock_response=MOCK,
                                  max_tokens=MAX_TOKENS)
    return float(litellm.completion_cost(completion_response=response))


def contender(name: str, cap: float, delay: float) -> Callable[[int], Awaitable[Any]]:
    if name == "llmguard Budget":
        chat = lg_litellm.completion(lg.Pipeline(name="budget").budget(cap))

        async def guarded(i: int) -> Any:
            return await chat(model=MODEL, messages=messages(i), max_tokens=MAX_TOKENS,
                              mock_response=MOCK, mock_delay=delay)

        return guarded
    router = Router(
        model_list=[{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_key": "sk-offline", "mock_response": MOCK}}],
        provider_budget_config={"openai": {"budget_limit": cap, "time_period": "1d"}},
    )

    async def routed(i: int) -> Any:
        return await router.acompletion(model=MODEL, messages=messages(i),
                                        max_tokens=MAX_TOKENS, mock_delay=delay)

    return routed


CONTENDERS = ("llmguard Budget", "LiteLLM Router provider budget")


async def burst(fn: Callable[[int], Awaitable[Any]], calls: int) -> tuple[int, int, float]:
    """(answered, refused, bill in USD) of ``calls`` calls started at once."""
    results = await asyncio.gather(*(fn(i) for i in range(calls)), return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    bill = sum(float(litellm.completion_cost(completion_response=r)) for r in answered)
    return len(answered), len(results) - len(answered), bill


def quiet() -> None:
    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "llmguard.budget"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def one_run(name: str, calls: int, delay: float) -> tuple[int, int, float]:
    """One burst through ``name`` in a fresh process: (answered, refused, bill / cap)."""
    done = subprocess.run([sys.executable, __file__, "--one", name, "--calls", str(calls),
                           "--delay", str(delay)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    answered, refused, ratio = json.loads(done.stdout.strip().splitlines()[-1])
    return answered, refused, ratio


def main(calls: int, repeats: int, delay: float) -> None:
    quiet()
    list_cost = calls * one_call_cost()
    rows: dict[str, list[tuple[int, int, float]]] = {name: [] for name in CONTENDERS}
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        for name in CONTENDERS:
            rows[name].append(one_run(name, calls, delay))
    print(f"{calls} calls at once, list cost 3.0x the cap (${list_cost / 3:.4f}); answers after "
          f"{delay:g} s; medians of {repeats} repeats, each burst in a fresh process\n")
    print("| contender | answered | refused | bill / cap | worst bill / cap | within the cap |")
    print("|---|--:|--:|--:|--:|---|")
    for name, runs in rows.items():
        ratios = [ratio for _, _, ratio in runs]
        within = sum(ratio <= 1.0 for ratio in ratios)
        print(f"| {name} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{statistics.median(r[1] for r in runs):,.0f} | {statistics.median(ratios):.3f} | "
              f"{max(ratios):.3f} | {within} of {repeats} |")
    print("\nLiteLLM's proxy (key max_budget): not run here (it needs virtual keys, so its "
          "Postgres database, and litellm[proxy] in its own venv); the Router's provider "
          "budget above checks and records spend the same way, in process.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single burst, in this process
    args = parser.parse_args()
    if args.one is None:
        main(args.calls, args.repeats, args.delay)
    else:
        quiet()
        cap = args.calls / 3 * one_call_cost()

        async def run_one() -> tuple[int, int, float]:  # the Router needs a running loop
            return await burst(contender(args.one, cap, args.delay), args.calls)

        answered, refused, bill = asyncio.run(run_one())
        print(json.dumps([answered, refused, bill / cap]))
