"""Rate limits and fair concurrency, offline: RPM/TPM quotas against a strict simulated provider
(zero 429s), then per-tenant fairness and priorities with ConcurrencyLimit. Virtual time keeps it
instant: looptime (in the dev extra) fast-forwards every wait."""

import asyncio

import looptime

import llmguard as lg
from llmguard.testing import SimulatedProvider


async def quotas() -> None:
    provider = SimulatedProvider(latency=1.0, rpm=60, tpm=20_000, capacity=1000)
    limit = lg.RateLimit(rpm=60, tpm=20_000)
    chat = lg.guard(limit)(provider.acompletion)
    loop = asyncio.get_running_loop()
    prompts = [[{"role": "user", "content": "x" * 4 * size}] for size in [200, 6000, 50, 3000] * 10]
    await asyncio.gather(*(chat(messages=m) for m in prompts))
    stats = provider.statistics()
    print(f"{stats.served} calls in {loop.time() / 60:.1f} virtual minutes, "
          f"{stats.rate_limited} 429s, peak window {stats.peak_window_tokens} of 20000 tokens")
    print(f"limiter: {limit.statistics()}")


async def fairness() -> None:
    order = []

    async def work(tenant: str, n: int, urgent: bool = False) -> None:
        await asyncio.sleep(1)
        order.append(f"{tenant}{n}{'!' if urgent else ''}")

    limit = lg.ConcurrencyLimit(1, key=lambda tenant, n, urgent=False: tenant,
                                priority=lambda tenant, n, urgent=False: 1 if urgent else 0)
    guarded = lg.guard(limit)(work)
    calls = [guarded("a", i) for i in range(4)] + [guarded("b", i) for i in range(2)]
    calls.append(guarded("c", 0, urgent=True))
    await asyncio.gather(*calls)
    print("served:", " ".join(order), "(a0 found the slot free; then urgent first, tenants round-robin)")


async def main() -> None:
    await quotas()
    await fairness()


if __name__ == "__main__":
    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
