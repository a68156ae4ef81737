"""A batch of chat calls through litellm, guarded: token-aware rate limit, bounded concurrency,
usage and cost from litellm's cost map. Offline: litellm answers with ``mock_response``."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map

import asyncio

import llmguard as lg
from llmguard.integrations import litellm as lg_litellm

QUESTIONS = [f"In one sentence, what is {topic}?" for topic in (
    "a token bucket", "backpressure", "a circuit breaker", "jitter", "a retry budget",
    "head-of-line blocking", "Little's law", "a semaphore", "a sliding window", "AIMD",
)]


async def main() -> None:
    pipeline = (
        lg.Pipeline(name="batch")
        .rate_limit(rpm=600, tpm=50_000, tokens=lg_litellm.count_tokens)
        .concurrency_limit(4)
    )
    chat = lg_litellm.completion(pipeline)

    async def ask(question: str) -> str:
        response = await chat(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            max_tokens=60,
            mock_response=f"(mock) an answer about {question.split('is ')[1].rstrip('?')}.",
        )
        return response.choices[0].message.content

    answers = await asyncio.gather(*(ask(q) for q in QUESTIONS))
    for question, answer in list(zip(QUESTIONS, answers))[:3]:
        print(f"{question}\n  -> {answer}")
    spend = chat.stats()["litellm"]
    print(f"{spend.calls} calls, {spend.input_tokens} input + {spend.output_tokens} output tokens, "
          f"${spend.cost_usd:.6f} ({dict(spend.cost_by_model)})")
    print(f"rate limit: {chat.stats()['rate_limit']}")


if __name__ == "__main__":
    asyncio.run(main())
