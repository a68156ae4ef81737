"""Guard an AsyncAnthropic client with separate input and output token quotas (ITPM/OTPM).

Offline: ``llmguard.testing`` serves Anthropic's Messages API on a loopback socket, limited the
way Anthropic documents (input counted on arrival; output charged as ``max_tokens`` and
adjusted to the output used when the answer ends) and answering with its
``anthropic-ratelimit-*`` headers. Twelve calls of ``max_tokens=400`` against 2,000 output
tokens a minute: sent bare, the provider refuses most of them with 429s; through llmguard, none
is refused, and all twelve are answered in under a second (0.7 s here, three rounds of 0.2 s).
RateLimit keeps each call's ``max_tokens`` charged until the server's output readings show it
giving unused output back (a gateway in front of the provider may keep it charged): the five
that fit go at once, their answers' readings rise by the output they did not use (twice by the
third answer, confirmed by the fourth's): from then on unused output is given back (the answers
held meanwhile too), so the other seven go as it comes back, not at the refill's pace (85 s
before bursts were judged, each ``max_tokens`` kept charged). The repr says what was learned.
"""

import asyncio
import time

from anthropic import AsyncAnthropic, RateLimitError

import llmguard as lg
from llmguard.integrations import anthropic as lg_anthropic
from llmguard.testing import InputOutputBucketServer, LoopbackServer

QUOTAS = {"rpm": 50, "input_tpm": 20_000, "output_tpm": 2_000}


async def ask(client, i: int) -> str:
    message = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=400,
        messages=[{"role": "user", "content": f"Question {i}: what is a token bucket?"}])
    return f"{message.usage.input_tokens} in, {message.usage.output_tokens} out"


async def main() -> None:
    bare_server = InputOutputBucketServer(**QUOTAS, latency=0.2, output_tokens=64)
    async with LoopbackServer(bare_server) as http:
        bare = AsyncAnthropic(base_url=http.origin, api_key="offline", max_retries=0)
        results = await asyncio.gather(*(ask(bare, i) for i in range(12)),
                                       return_exceptions=True)
    refused = sum(isinstance(r, RateLimitError) for r in results)
    print(f"bare client: {12 - refused} answered, {refused} refused with 429")

    server = InputOutputBucketServer(**QUOTAS, latency=0.2, output_tokens=64)
    async with LoopbackServer(server) as http:
        limit = lg.RateLimit(**QUOTAS)  # input/output paced as buckets by default
        pipeline = lg.Pipeline(name="claude").retry(attempts=4).then(limit)
        client = lg_anthropic.wrap(
            AsyncAnthropic(base_url=http.origin, api_key="offline", max_retries=0), pipeline)
        start = time.monotonic()
        answers = await asyncio.gather(*(ask(client, i) for i in range(12)))
        took = time.monotonic() - start
    print(f"through llmguard: {len(answers)} answered ({answers[0]}) in {took:.1f} s, "
          f"{server.statistics().rate_limited} refused with 429")
    print(limit)


if __name__ == "__main__":
    asyncio.run(main())
