"""One model over three deployments: llmguard's Router against LiteLLM's Router, on the same
simulated servers, in virtual time.

Three deployments with unequal quotas, ``llmguard.testing.TokenBucketServer`` s of 60, 120 and
300 RPM (buckets refilling continuously, full at the start, 1 s per answer, 429 with
Retry-After and OpenAI's ``x-ratelimit-*`` headers). Demand is 3x their summed quota: 24 calls
a second for ``--seconds`` (default 60 s: 1,440 calls). Three scenarios:

* **quotas**: every deployment's RPM given;
* **one down 30 s**: the 120-RPM deployment answers 503 for the first 30 s;
* **learned**: the 300-RPM deployment's quota is not given: llmguard learns it from the
  deployment's ``x-ratelimit-limit-*`` headers (what ``llmguard.integrations.openai`` feeds
  ``Router.observe_headers``); LiteLLM has no such learning, so it is given no RPM there.

Contenders, each as a user would configure it to get every call done (6 retries each):

* **llmguard**: ``Pipeline().retry(attempts=7).route(*deployments)`` (``refill="continuous"``,
  the servers' shape), default strategy ``headroom``; in virtual time (looptime), in process;
* **LiteLLM usage-based-routing-v2**: ``litellm.Router(routing_strategy="usage-based-routing-
  v2", enable_pre_call_checks=True, num_retries=6)`` with each deployment's ``rpm``;
* **LiteLLM simple-shuffle**: the same with the default strategy (weighted by ``rpm``).

LiteLLM runs in real time: its per-minute usage counters and cooldowns live in its native
stores on the wall clock, which looptime cannot move. Its deployments are the same simulated
servers behind ``llmguard.testing.LoopbackServer`` (real HTTP on 127.0.0.1), reached by its
OpenAI provider through ``api_base`` (``max_retries=0`` there: its Router retries). So each of
its rows takes ``--seconds`` plus the drain in real time; ``--contenders llmguard`` skips them.

Columns: calls done and failed; 429s as a share of the requests the servers received (a 429 is
a request a deployment refused for being over its quota); wall time (first call to last
answer) over the ideal (greedy admission into the deployments' buckets in arrival order, the
soonest the same arrivals could all be answered).

    python benchmarks/bench_router.py [--seconds 60] [--repeats 3] [--contenders llmguard,...]
        [--scenarios ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import looptime

import llmguard as lg
from llmguard.testing import Arrival, LoopbackServer, Overloaded, TokenBucketServer
from llmguard.testing._servers import admission_headers

RPMS = (60, 120, 300)
LATENCY = 1.0
OUTAGE = 30.0  # seconds the 120-RPM deployment answers 503 in "one down 30 s"
RETRIES = 6  # retries each client may make of a call (llmguard's Retry, LiteLLM's num_retries)
MESSAGES = [{"role": "user", "content": "hello"}]
SCENARIOS = ("quotas", "one down 30 s", "learned")


@dataclass
class Result:
    done: int
    failed: int
    arrivals: int
    rate_limited: int
    wall: float
    ideal: float


def ideal_time(arrivals: list[float], outage: float) -> float:
    """The soonest every arrival could be answered: each admitted, in arrival order, by the
    deployment whose bucket holds a request soonest, the fullest among equals (the 120-RPM one
    unavailable during the outage), plus one answer's latency."""
    levels = [float(rpm) for rpm in RPMS]
    since = [0.0] * len(RPMS)
    last = 0.0
    for at in arrivals:
        best, best_key, best_at = 0, (math.inf, 0.0), math.inf
        for i, rpm in enumerate(RPMS):
            rate = rpm / 60.0
            start = max(at, since[i], outage if rpm == 120 else 0.0)
            level = min(rpm, levels[i] + (start - since[i]) * rate)
            when = start if level >= 1 else start + (1 - level) / rate
            key = (when, -level / rpm)  # soonest; among equals the fullest (wastes no refill)
            if key < best_key:
                best, best_key, best_at = i, key, when
        rpm = RPMS[best]
        levels[best] = min(rpm, levels[best] + (best_at - since[best]) * rpm / 60.0) - 1
        since[best] = best_at
        last = max(last, best_at)
    return last + LATENCY


class Deployed(TokenBucketServer):
    """A token-bucket server that answers 503 for the first ``outage`` seconds from ``start``
    (loop time; the run sets it)."""

    def __init__(self, rpm: int, outage: float) -> None:
        super().__init__(rpm=rpm, latency=LATENCY)
        self.outage, self.start = outage, 0.0

    async def acompletion(self, **kwargs: Any) -> Any:
        if asyncio.get_running_loop().time() - self.start < self.outage:
            self.arrivals.append(Arrival(self._now(), 0, 503))
            raise Overloaded("deployment unavailable", status_code=503,
                             headers={"retry-after": "1"})
        return await super().acompletion(**kwargs)


def servers(outage: float) -> list[Deployed]:
    """The three deployments; the 120-RPM one down for ``outage`` seconds."""
    return [Deployed(rpm, outage if rpm == 120 else 0.0) for rpm in RPMS]


def llmguard_caller(fleet: list[Deployed], scenario: str) -> Callable[..., Any]:
    deployments = []
    router: lg.Router
    for server, rpm in zip(fleet, RPMS):
        send = server.acompletion
        quota: dict[str, Any] = {"rpm": rpm}
        if scenario == "learned" and rpm == 300:
            quota = {}

            async def send(_server: Deployed = server, **kwargs: Any) -> Any:
                result = await _server.acompletion(**kwargs)
                # The headers this answer carries (what LoopbackServer sends over HTTP).
                router.observe_headers(admission_headers.get() or {})
                return result
        deployments.append(lg.Deployment(send, name=f"rpm{rpm}", refill="continuous", **quota))
    router = lg.Router(*deployments)
    return lg.Pipeline(name="chat").retry(attempts=RETRIES + 1).then(router).wrap(fleet[0].acompletion)


def litellm_caller(urls: list[str], scenario: str, strategy: str) -> Callable[..., Any]:
    """LiteLLM's Router over the servers at ``urls`` (its OpenAI provider, ``api_base``)."""
    import litellm

    model_list = []
    for url, rpm in zip(urls, RPMS):
        params: dict[str, Any] = {"model": "openai/m", "api_base": url, "api_key": "test",
                                  "max_retries": 0}
        if not (scenario == "learned" and rpm == 300):
            params["rpm"] = rpm
        model_list.append({"model_name": "chat", "litellm_params": params})
    options: dict[str, Any] = {}
    if strategy == "usage-based-routing-v2":
        options = {"routing_strategy": strategy, "enable_pre_call_checks": True}
    router = litellm.Router(model_list=model_list, num_retries=RETRIES, **options)

    async def call(**kwargs: Any) -> Any:
        return await router.acompletion(**{**kwargs, "model": "chat"})
    return call


async def demand(call: Callable[..., Awaitable[Any]], seconds: float) -> dict[str, Any]:
    """3x the summed quota for ``seconds``, evenly spaced: calls done, failed, wall, ideal."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = int(seconds * sum(RPMS) / 60 * 3)
    arrivals = [i * seconds / n for i in range(n)]
    done_at: list[float] = []
    failed = 0

    async def one(at: float) -> None:
        nonlocal failed
        await asyncio.sleep(at)
        try:
            await call(model="m", messages=MESSAGES, max_tokens=16)
        except Exception:
            failed += 1
        else:
            done_at.append(loop.time() - start)

    await asyncio.gather(*(one(at) for at in arrivals))
    return {"done": len(done_at), "failed": failed, "wall": max(done_at, default=0.0),
            "arrivals": arrivals}


def run(contender: str, scenario: str, seconds: float) -> Result:
    fleet = servers(OUTAGE if scenario == "one down 30 s" else 0.0)
    outcome: dict[str, Any] = {}

    async def in_process() -> None:
        outcome.update(await demand(llmguard_caller(fleet, scenario), seconds))

    async def over_http() -> None:
        async with contextlib.AsyncExitStack() as stack:
            https = [await stack.enter_async_context(LoopbackServer(s)) for s in fleet]
            for server in fleet:
                server.start = asyncio.get_running_loop().time()
            call = litellm_caller([h.base_url for h in https], scenario,
                                  contender.split(" ", 1)[1])
            outcome.update(await demand(call, seconds))

    if contender == "llmguard":
        loop = looptime.new_event_loop(start=0, noop_cycles=1)
        try:
            loop.run_until_complete(in_process())
        finally:
            loop.close()
    else:
        asyncio.run(over_http())
    stats = [server.statistics() for server in fleet]
    ideal = ideal_time(outcome["arrivals"], OUTAGE if scenario == "one down 30 s" else 0.0)
    return Result(outcome["done"], outcome["failed"], sum(s.arrivals for s in stats),
                  sum(s.rate_limited for s in stats), outcome["wall"], ideal)


CONTENDERS = ("llmguard", "litellm usage-based-routing-v2", "litellm simple-shuffle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of demand")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each LiteLLM row (medians; llmguard's are deterministic)")
    args = parser.parse_args()
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    print(f"Three token-bucket deployments ({'/'.join(map(str, RPMS))} RPM, {LATENCY:g} s an "
          f"answer), demand 3x their sum for {args.seconds:g} s (llmguard in virtual time, "
          f"LiteLLM in real time over loopback HTTP, median of {args.repeats})\n")
    print("| scenario | client | done | failed | 429s | wall / ideal |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in args.scenarios.split(","):
        for contender in args.contenders.split(","):
            runs = [run(contender, scenario, args.seconds)
                    for _ in range(1 if contender == "llmguard" else args.repeats)]
            done = statistics.median(r.done for r in runs)
            failed = statistics.median(r.failed for r in runs)
            share = statistics.median(100 * r.rate_limited / r.arrivals if r.arrivals else 0.0
                                      for r in runs)
            ratio = statistics.median(r.wall / r.ideal for r in runs)
            print(f"| {scenario} | {contender} | {done:,.0f} | {failed:,.0f} | {share:.1f}% | "
                  f"{ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
