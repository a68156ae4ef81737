"""Guard an AsyncOpenAI client: the provider's x-ratelimit-* headers steer llmguard's RateLimit.

Offline: a local ``httpx.MockTransport`` answers like the OpenAI API, with rate-limit headers
counting down, and a 429 once the provider's window is spent.
"""

import asyncio

import httpx
import openai

import llmguard as lg
from llmguard.integrations import openai as lg_openai


def provider() -> httpx.MockTransport:
    remaining = 5  # requests the provider still allows in its current window

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal remaining
        headers = {"x-ratelimit-reset-requests": "30s", "x-ratelimit-reset-tokens": "30s",
                   "x-ratelimit-remaining-tokens": "90000"}
        if remaining == 0:
            headers.update({"retry-after": "30", "x-ratelimit-remaining-requests": "0"})
            return httpx.Response(429, headers=headers, json={"error": {
                "message": "Rate limit reached for requests", "type": "requests",
                "param": None, "code": "rate_limit_exceeded"}})
        remaining -= 1
        headers["x-ratelimit-remaining-requests"] = str(remaining)
        return httpx.Response(200, headers=headers, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": f"answer #{5 - remaining}"}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})

    return httpx.MockTransport(answer)


async def main() -> None:
    client = openai.AsyncOpenAI(
        api_key="offline", base_url="http://openai.local/v1", max_retries=0,
        http_client=httpx.AsyncClient(transport=provider()),
    )
    limit = lg.RateLimit(rpm=500, max_wait=0.2)  # we think we have 500/min; the provider knows better
    client = lg_openai.wrap(client, lg.Pipeline(limit, name="openai"))
    for i in range(7):
        try:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}])
            print(f"call {i}: {reply.choices[0].message.content:10} "
                  f"requests llmguard will still admit: {limit.statistics().requests_available}")
        except (openai.RateLimitError, lg.AdmissionError) as exc:
            print(f"call {i}: {type(exc).__name__}: {str(exc)[:90]}")


if __name__ == "__main__":
    asyncio.run(main())
