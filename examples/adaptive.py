"""Adaptive concurrency finds a provider's capacity by itself (simulated provider, virtual time).

A provider that serves 24 calls at once (unknown to the client) is hit by 200 concurrent
callers. AdaptiveConcurrency starts at 4 and settles just above 24, with no overload errors.
"""

import asyncio

import looptime

import llmguard as lg
from llmguard.testing import SimulatedProvider


async def main() -> None:
    provider = SimulatedProvider(capacity=24, latency=1.0)
    layer = lg.AdaptiveConcurrency(initial=4)
    chat = lg.guard(layer)(provider.acompletion)
    loop = asyncio.get_running_loop()

    async def caller(i: int) -> None:
        for _ in range(10):
            await chat(model="sim", messages=[{"role": "user", "content": f"question {i}"}])

    async def report() -> None:
        for _ in range(6):
            await asyncio.sleep(10)
            print(f"t={loop.time():4.0f}s  limit={layer.statistics().limit:3d}  "
                  f"served={provider.statistics().served}")

    await asyncio.gather(report(), *(caller(i) for i in range(200)))
    stats = provider.statistics()
    print(f"served {stats.served} calls, {stats.overloaded} overload errors, "
          f"final limit {layer.statistics().limit} for a capacity of 24")


if __name__ == "__main__":
    # Simulated minutes in milliseconds: a fast-forward event loop (looptime, in the dev extra).
    loop = looptime.new_event_loop(start=0, noop_cycles=1)  # no I/O to wait for
    loop.run_until_complete(main())
    loop.close()
