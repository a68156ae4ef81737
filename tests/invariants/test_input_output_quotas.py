"""The README stack with separate input and output token quotas (``input_tpm``/``output_tpm``),
against a server shaped like Anthropic's limiter (``InputOutputBucketServer``: requests, input
and output buckets; input counted at arrival, output charged as ``max_tokens`` and adjusted to
the output used when the answer ends), demand 3x the quota, default settings otherwise.
Virtual time (looptime)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard.testing import InputOutputBucketServer, virtual_wall_clock

RPM = 500
INPUT_TPM = 6_000
OUTPUT_TPM = 4_000
MAX_TOKENS = 200
#: Output each answer uses (of MAX_TOKENS reserved): the output bucket binds after the first burst.
OUTPUT = 64
#: About 100 input tokens a call: the input bucket binds too (60 calls a minute).
PROMPT = "lorem ipsum " * 33
#: 3x what the input quota admits in a minute.
DEMAND = 180


def readme_stack(refill: str | None = None) -> lg.Pipeline:
    """The README's recommended stack, default settings, with the server's quotas."""
    options: dict[str, Any] = {} if refill is None else {"refill": refill}
    return (lg.Pipeline(name="anthropic").metrics().cache(ttl=300).fallback({"model": "backup"})
            .retry(attempts=4).circuit_breaker().timeout(30)
            .rate_limit(rpm=RPM, input_tpm=INPUT_TPM, output_tpm=OUTPUT_TPM, **options)
            .concurrency_limit(32))


async def drive(server: InputOutputBucketServer, pipeline: lg.Pipeline,
                hear: bool = False) -> tuple[list[Any], float]:
    """Demand 3x the quota through ``pipeline``; ``hear``: its rate limit reads the server's
    headers, as it does through the ``anthropic`` SDK (``llmguard.integrations.anthropic``)."""
    if hear:
        [limit] = [layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit)]
        server.on_headers.append(limit.observe_headers)
    guarded = pipeline.wrap(server.amessages)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(
        *(guarded(model="claude", max_tokens=MAX_TOKENS,
                  messages=[{"role": "user", "content": f"{PROMPT} {i}"}])
          for i in range(DEMAND)), return_exceptions=True)
    return results, loop.time() - start


@pytest.mark.parametrize("refill", [None, "continuous"])
async def test_readme_stack_keeps_every_bucket_within_quota(refill: str | None) -> None:
    """Every call is answered, none is cancelled after the server charged it, and at most 1%
    of arrivals (in fact none) find a bucket without room: the client's input reservation is
    the server's count, its output reservation ``max_tokens`` given back down to the output
    when the answer ends, as the server does. With ``refill="continuous"`` the run also ends
    within 10% of the server's own ideal time."""
    server = InputOutputBucketServer(rpm=RPM, input_tpm=INPUT_TPM, output_tpm=OUTPUT_TPM,
                                     latency=2.0, output_tokens=OUTPUT)
    results, wall = await drive(server, readme_stack(refill))
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} calls failed: {failed[0]!r}"
    assert all(r["usage"]["output_tokens"] == OUTPUT for r in results)
    stats = server.statistics()
    assert stats.served == DEMAND
    assert stats.cancelled_after_arrival == 0
    assert stats.rate_limited <= DEMAND // 100, f"{stats.rate_limited} 429s: {server!r}"
    if refill == "continuous":
        prompt = server.quotas["input-tokens"]
        assert prompt is not None
        ideal = server.ideal_time(DEMAND, input_tokens=results[-1]["usage"]["input_tokens"],
                                  max_tokens=MAX_TOKENS, output_tokens=OUTPUT)
        assert wall <= 1.10 * ideal, f"{wall:.1f} s against an ideal of {ideal:.1f} s"


async def test_without_the_output_give_back_the_output_quota_would_bind_at_max_tokens() -> None:
    """The output reservation comes back down to the output used: 40 calls of max_tokens=200
    using 64 each fit a 4,000-token output bucket in much less time than 40 x 200 tokens would
    take (8,000 tokens: a whole minute of refill after the first 20 calls)."""
    server = InputOutputBucketServer(output_tpm=OUTPUT_TPM, latency=1.0, output_tokens=OUTPUT)
    guarded = (lg.Pipeline(name="out").rate_limit(output_tpm=OUTPUT_TPM, refill="continuous")
               .wrap(server.amessages))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(guarded(model="claude", max_tokens=MAX_TOKENS,
                                   messages=[{"role": "user", "content": "hi"}])
                           for _ in range(40)))
    wall = loop.time() - start
    assert server.statistics().rate_limited == 0
    # 20 at once, then each needs 200 of which the others' give-backs leave ~136 each: ~6 s
    assert wall < 30, wall


@pytest.mark.parametrize("gives_back", [True, False])
async def test_the_output_give_back_is_learned_from_the_servers_readings(
        gives_back: bool) -> None:
    """Whether the server gives unused output back is read from its output remaining headers
    (``llmguard._admission.ratelimit.giveback``), not assumed from Anthropic's documentation: a
    server that keeps each request's ``max_tokens`` charged (``refunds_output=False``; before,
    the README stack got 120 429s in 300 arrivals for 180 calls) sees no more than 1% 429s, and
    one that gives back (Anthropic's) is used within 10% of its ideal time, both with default
    settings. The statistics say which was learned."""
    server = InputOutputBucketServer(rpm=RPM, input_tpm=INPUT_TPM, output_tpm=OUTPUT_TPM,
                                     latency=2.0, output_tokens=OUTPUT, refunds_output=gives_back)
    pipeline = readme_stack()
    results, wall = await drive(server, pipeline, hear=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert server.statistics().rate_limited <= DEMAND // 100, repr(server)
    ideal = server.ideal_time(DEMAND, input_tokens=results[-1]["usage"]["input_tokens"],
                              max_tokens=MAX_TOKENS,
                              output_tokens=OUTPUT if gives_back else MAX_TOKENS)
    assert wall <= 1.10 * ideal, f"{wall:.1f} s against an ideal of {ideal:.1f} s"
    [limit] = [layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit)]
    said = ("unused output given back (the server does)" if gives_back else
            "max_tokens kept charged (the server does not give unused output back)")
    assert said in limit.statistics().shape and said in repr(limit)


#: (shape, gives back, headers heard): what the README stack learns with default settings.
LEARNED = [(shape, gives_back, True) for shape in ("bucket", "fixed")
           for gives_back in (True, False)] + [("bucket", True, False), ("bucket", False, False)]


@pytest.mark.parametrize(("shape", "gives_back", "hear"), LEARNED)
async def test_each_part_paces_like_the_servers_own_limiter_started_mid_minute(
        shape: str, gives_back: bool, hear: bool) -> None:
    """Started 40 s into a minute, 3x the quota, default settings: against Anthropic's
    buckets or a gateway counting input and output tokens per clock minute (``shape="fixed"``),
    one that gives unused output back or keeps ``max_tokens`` charged, its headers read or
    not (Anthropic's buckets; a fixed window is learned from its reset moments): every call
    done, at most 1% of arrivals refused (at most one 429 while learning), within 1.10x the
    server's ideal. The shape each part learned is said."""
    with virtual_wall_clock():
        loop = asyncio.get_running_loop()
        await asyncio.sleep((40 - loop.time()) % 60)
        server = InputOutputBucketServer(rpm=RPM, input_tpm=INPUT_TPM, output_tpm=OUTPUT_TPM,
                                         latency=2.0, output_tokens=OUTPUT, shape=shape,
                                         refunds_output=gives_back, rate_limit_headers=hear)
        pipeline = readme_stack()
        start = loop.time()
        results, wall = await drive(server, pipeline, hear=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert server.statistics().rate_limited <= DEMAND // 100, repr(server)
    ideal = server.ideal_time(DEMAND, start=start,
                              input_tokens=results[-1]["usage"]["input_tokens"],
                              max_tokens=MAX_TOKENS,
                              output_tokens=OUTPUT if gives_back else MAX_TOKENS)
    assert wall <= 1.10 * ideal, f"{wall:.1f} s against an ideal of {ideal:.1f} s"
    [limit] = [layer for layer in pipeline.layers if isinstance(layer, lg.RateLimit)]
    said = limit.statistics().shape
    if hear:
        kind = "bucket (reset" if shape == "bucket" else "fixed (reset"
        assert f"input: {kind}" in said and f"output: {kind}" in said, said
    else:
        assert "output: unknown (nothing heard from the server yet: paced as a token bucket, " \
               "as Anthropic" in said, said
    assert ("unused output given back" if gives_back else "max_tokens kept charged (") in said
