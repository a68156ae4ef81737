"""Budget on Redis: processes sharing one cap never pass it together, against the real Redis.

Real time (the Redis server's clock, real processes), so looptime is off; every wait is short
and bounded generously.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmguard as lg
from llmguard.backends.redis import RedisBackend
from llmguard.testing import FakeLLM

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
PRICES = {"m": (1.0, 2.0)}

#: One process of the burst: 250 calls at once through a Budget shared in Redis; prints what
#: happened to them, the provider's bill (the usage it reported, at list price) and the
#: budget_soft_limit events it published.
WORKER = """
import asyncio, json, sys
import llmguard as lg
from llmguard.backends.redis import RedisBackend
from llmguard.testing import FakeLLM

async def main(url, prefix, cap):
    backend = RedisBackend(url, prefix=prefix, timeout=10)
    budget = lg.Budget(cap, prices={"m": (1.0, 2.0)}, backend=backend, soft=0.5)
    chat = lg.Pipeline(budget).wrap(FakeLLM(latency=0.2).acompletion)
    soft = []
    lg.subscribe(soft.append, "budget_soft_limit")
    def one(i):
        return chat(model="m", messages=[{"role": "user", "content": f"question {i % 10}"}],
                    max_tokens=8)
    results = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(250)), return_exceptions=True), 300)
    bill = sum(r["usage"]["prompt_tokens"] * 1.0 + r["usage"]["completion_tokens"] * 2.0
               for r in results if isinstance(r, dict)) / 1e6
    others = [repr(r) for r in results if not isinstance(r, (dict, lg.BudgetExceeded))]
    print(json.dumps({"answered": sum(isinstance(r, dict) for r in results),
                      "refused": sum(isinstance(r, lg.BudgetExceeded) for r in results),
                      "others": others[:3], "bill": bill, "soft": len(soft)}))
    await backend.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def one_call_bill() -> float:
    result = await FakeLLM().acompletion(
        model="m", messages=[{"role": "user", "content": "question 0"}], max_tokens=8)
    return (result["usage"]["prompt_tokens"] + 2 * result["usage"]["completion_tokens"]) / 1e6


async def test_a_1000_call_burst_from_4_processes_never_passes_the_cap(redis_url, redis_prefix):
    """1,000 concurrent calls from 4 processes on one Redis budget, their list cost about 3x
    the cap: the provider's bill never passes the cap and reaches at least 95% of it; every
    call answers or ends with BudgetExceeded (none lost or hung); nothing stays reserved; the
    soft limit (soft=0.5) is published once in all, by whichever process reached it."""
    import redis

    cap = 1000 / 3 * await one_call_bill()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_url, redis_prefix,
                               repr(cap)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    reports = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [r["others"] for r in reports] == [[]] * 4
    assert sum(r["answered"] + r["refused"] for r in reports) == 1000
    bill = sum(r["bill"] for r in reports)
    assert 0.95 * cap <= bill <= cap + 1e-12, (bill, cap)  # 1e-12: the float sum's rounding
    assert sum(r["soft"] for r in reports) == 1, reports
    print(f"bill {bill / cap:.2%} of the cap; answered {sum(r['answered'] for r in reports)}")
    client = redis.Redis.from_url(redis_url)
    (name,) = [n for n in client.scan_iter(match=f"{redis_prefix}:budget:*") if
               not n.endswith(b":held")]
    spent, reserved = (int(v) for v in client.hmget(name, "spent", "reserved"))
    client.close()
    assert reserved == 0 and bill <= spent / 1e9 + 1e-12 and spent / 1e9 <= cap


async def test_a_dead_processs_reservations_come_back_when_their_leases_end(
        redis_url, redis_prefix):
    """Reservations whose process never settles (it died) leave the total once their lease
    has run out, so the budget is not held forever; a settlement after that still counts."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    ledger = backend.budget_ledger()
    ledger.lease = 0.2
    ticket, _, reserved = await ledger.reserve("acct", 600, 1000, None)
    assert ticket is not None and reserved == 600
    assert (await ledger.reserve("acct", 600, 1000, None))[0] is None
    await asyncio.sleep(0.3)
    again, spent, reserved = await ledger.reserve("acct", 600, 1000, None)
    assert again is not None and (spent, reserved) == (0, 600)
    ledger.settle("acct", ticket, 100)  # late: its reservation already expired
    await asyncio.sleep(0.2)
    assert await ledger.read("acct") == (100, 600)
    await backend.aclose()


async def test_a_budget_never_spends_per_process_while_redis_is_down(redis_prefix):
    """With Redis unreachable the call is refused with BackendUnavailable and never sent, even
    with on_error="local" (each process would otherwise spend the whole cap)."""
    backend = RedisBackend("redis://127.0.0.1:1/0", prefix=redis_prefix, timeout=2)
    llm = FakeLLM()
    chat = lg.Pipeline(lg.Budget(1.0, prices=PRICES, backend=backend)).wrap(llm.acompletion)
    with pytest.raises(lg.BackendUnavailable, match="did not answer 3 times.*never spent per process"):
        await chat(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert llm.call_count == 0
    await backend.aclose()


async def test_statistics_and_usage_read_the_shared_spend(redis_url, redis_prefix):
    """Two backends (two processes) on one budget: each sees the other's spend in usage()."""
    first, second = (RedisBackend(redis_url, prefix=redis_prefix) for _ in range(2))
    budgets = [lg.Budget(1.0, prices=PRICES, backend=b, per="day") for b in (first, second)]
    llm = FakeLLM()
    for budget in budgets:
        await lg.Pipeline(budget).wrap(llm.acompletion)(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    await asyncio.sleep(0.2)  # the settlements are written in the background
    both = await budgets[0].usage()
    # The first process's own view is as of its last settlement; the second settled later.
    assert both.spent_usd == pytest.approx(2 * budgets[0].statistics().spent_usd)
    assert both.spent_usd == pytest.approx(budgets[1].statistics().spent_usd)
    assert both.reserved_usd == 0 and both.window == budgets[1].statistics().window
    client = __import__("redis").Redis.from_url(redis_url)
    assert all(client.ttl(n) > 0 for n in client.scan_iter(match=f"{redis_prefix}:budget:*"))
    client.close()
    await first.aclose()
    await second.aclose()
