"""Pacing like the provider's own limiter, offline: the same RateLimit(rpm=60), nothing else set,
against a token bucket (OpenAI's shape), a fixed clock-minute window, and LiteLLM's proxy shape
(rpm - 1 per clock minute, no reset header), each batch started 40 s into a minute. It learns
each server's shape from its headers and 429s and says which, and why. Virtual time keeps it
instant: looptime (in the dev extra) fast-forwards every wait."""

import asyncio

import looptime

import llmguard as lg
from llmguard.testing import FixedWindowServer, ProxyWindowServer, TokenBucketServer


async def batch(server, name: str) -> None:
    loop = asyncio.get_running_loop()
    phase = server.phase() if isinstance(server, ProxyWindowServer) else loop.time() % 60
    await asyncio.sleep((40 - phase) % 60)  # start 40 s into the server's minute
    limit = lg.RateLimit(rpm=60)
    server.on_headers.append(limit.observe_headers)  # what an HTTP client reads
    chat = lg.guard(lg.Retry(attempts=3), limit, lg.ConcurrencyLimit(32))(server.acompletion)
    start = loop.time()
    await asyncio.gather(*(chat(messages=[{"role": "user", "content": f"question {i}"}],
                                max_tokens=50) for i in range(180)))
    ideal = server.ideal_time(180, tokens=0, start=start)
    stats = limit.statistics()
    print(f"{name}: 180 calls in {loop.time() - start:.0f} s ({(loop.time() - start) / ideal:.2f}x "
          f"the server's ideal), {server.statistics().rate_limited} 429s, limit {stats.requests_limit}")
    print(f"  learned: {stats.shape}")


async def main() -> None:
    await batch(TokenBucketServer(rpm=60, latency=2.0), "token bucket")
    await batch(FixedWindowServer(rpm=60, latency=2.0), "fixed window")
    await batch(ProxyWindowServer(rpm=60, latency=2.0), "LiteLLM-shaped proxy")


if __name__ == "__main__":
    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
