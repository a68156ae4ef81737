"""A spend cap that holds under concurrency: 300 calls at once against a $0.01 budget.

Each attempt reserves its maximum cost before it is sent (the prompt's bound times the input
price plus max_tokens times the output price) and settles to the cost of the usage the answer
reports. Calls that do not fit wait while calls in flight may free room, and end with
BudgetExceeded only when they cannot fit even if every call in flight cost nothing. Offline:
the FakeLLM answers with OpenAI-style usage.
"""

import asyncio

import llmguard as lg
from llmguard.testing import FakeLLM

PRICES = {"my-model": (0.15, 0.60)}  # USD per million input / output tokens


async def main() -> None:
    llm = FakeLLM(latency=0.05, reply_prefix="a short answer about ")
    budget = lg.Budget(0.01, prices=PRICES, soft=0.8)
    chat = (lg.Pipeline(name="capped").retry(attempts=3).timeout(30).then(budget)
            .concurrency_limit(64).wrap(llm.acompletion))

    def on_soft(event: lg.Event) -> None:
        print(f"soft limit: ${event.detail.spent_usd:.6f} of ${event.detail.cap_usd} spent")

    async def one(i: int) -> str:
        try:
            await chat(model="my-model", max_tokens=40,
                       messages=[{"role": "user", "content": f"topic {i} " * 20}])
            return "answered"
        except lg.BudgetExceeded:
            return "over budget"

    with lg.subscribe(on_soft, lg.EventKind.BUDGET_SOFT_LIMIT), lg.recording() as calls:
        outcomes = await asyncio.gather(*(one(i) for i in range(300)))
    stats = budget.statistics()
    billed = sum(record.cost or 0.0 for record in calls)
    print(f"{outcomes.count('answered')} answered, {outcomes.count('over budget')} over budget")
    print(f"spent ${stats.spent_usd:.6f} of ${stats.cap_usd} (billed ${billed:.6f}); "
          f"reserved now ${stats.reserved_usd:.6f}")
    assert stats.spent_usd <= stats.cap_usd  # exact: the ledger counts integer nano-dollars


asyncio.run(main())
