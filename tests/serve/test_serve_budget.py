"""Per-tenant budgets in the gateway: max_budget and budget_duration in the TOML, 429
insufficient_quota once the next call could pass the cap, /v1/usage with spent and remaining."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import openai
import pytest
from serve_helpers import MESSAGES, served, write_config

from llmguard._serve.config import ConfigError, load

KEY = "budget-tenant-key-1"
OTHER = "budget-tenant-key-2"


def config(budget: str = "max_budget = 0.0003\nbudget_duration = \"day\"") -> str:
    return f"""
[models.fake]
latency = 0.2
price_input = 1.0
price_output = 2.0

[models.cheap]
latency = 0.0
price_input = 0.1
price_output = 0.1

[tenants.acme]
api_key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
{budget}

[tenants.globex]
api_key_sha256 = "{hashlib.sha256(OTHER.encode()).hexdigest()}"
"""


@pytest.mark.looptime(False)
async def test_a_tenant_over_its_budget_gets_429_insufficient_quota(tmp_path) -> None:
    """A burst of concurrent requests from one tenant: what is answered stays within
    max_budget (the usage the gateway reports, at the model's price), the rest get 429
    insufficient_quota (the SDK's RateLimitError); /v1/usage shows spent and remaining; another
    tenant is not affected."""
    with served(write_config(tmp_path, config())) as server:
        sdk = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)

        async def one(i: int) -> object:
            try:
                return await sdk.chat.completions.create(
                    model="fake", max_tokens=16,
                    messages=[{"role": "user", "content": f"question {i}"}])
            except openai.RateLimitError as exc:
                return exc

        results = await asyncio.gather(*(one(i) for i in range(40)))
        answered = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert answered and refused and len(answered) + len(refused) == 40
        assert {r.body["code"] for r in refused} == {"insufficient_quota"}
        assert "raise the cap" in refused[0].body["message"]
        bill = sum(r.usage.prompt_tokens * 1.0 + r.usage.completion_tokens * 2.0
                   for r in answered) / 1e6
        assert bill <= 0.0003
        usage = httpx.get(server.url + "/v1/usage",
                          headers={"authorization": f"Bearer {KEY}"}).json()
        budget = usage["budget"]
        assert budget["max_budget"] == 0.0003 and budget["budget_duration"] == "day"
        assert budget["spent_usd"] == pytest.approx(bill, abs=1e-8)
        assert budget["remaining_usd"] == pytest.approx(0.0003 - bill, abs=1e-8)
        assert budget["reserved_usd"] == 0
        other = httpx.post(server.url + "/v1/chat/completions",
                           headers={"authorization": f"Bearer {OTHER}"},
                           json={"model": "fake", "messages": MESSAGES})
        assert other.status_code == 200
        assert "budget" not in httpx.get(server.url + "/v1/usage", headers={
            "authorization": f"Bearer {OTHER}"}).json()
        await sdk.close()


def test_budget_config_is_checked_at_load(tmp_path) -> None:
    """A budget for a tenant that may use an unpriced model, a duration without a budget, an
    unknown duration and a negative cap are refused at load, naming the key."""
    unpriced = config().replace("price_input = 0.1\nprice_output = 0.1\n", "")
    with pytest.raises(ConfigError, match=r"tenants.acme.max_budget: model 'cheap' has no price"):
        load(str(write_config(tmp_path, unpriced)))
    with pytest.raises(ConfigError, match="budget_duration: resets max_budget"):
        load(str(write_config(tmp_path, config('budget_duration = "day"'))))
    with pytest.raises(ConfigError, match="budget_duration: must be one of 'minute'"):
        load(str(write_config(tmp_path, config('max_budget = 1\nbudget_duration = "30d"'))))
    with pytest.raises(ConfigError, match="max_budget: must be a number > 0"):
        load(str(write_config(tmp_path, config("max_budget = -1"))))
    assert load(str(write_config(tmp_path, config(
        'max_budget = 5\nbudget_duration = "1mo"')))).tenants["acme"].budget_duration == "month"


def test_a_tenant_budget_bills_cached_prompt_tokens_at_the_cached_price(tmp_path) -> None:
    """price_cached_input prices the prompt tokens the upstream reports as cached (OpenAI's
    prompt_tokens_details.cached_tokens); a model without it bills them as input."""
    from llmguard._serve.budgets import attach_budgets
    from llmguard._serve.tenants import Tenants

    cfg = load(str(write_config(tmp_path, config("max_budget = 5").replace(
        "price_output = 2.0\n", "price_output = 2.0\nprice_cached_input = 0.25\n"))))
    tenants = Tenants(cfg.tenants)
    attach_budgets(tenants, cfg.models, None)
    budget = tenants.by_name["acme"].budget
    usage = {"prompt_tokens": 1000, "completion_tokens": 100,
             "prompt_tokens_details": {"cached_tokens": 800}}
    assert budget.cost("fake", {"usage": usage}) == pytest.approx(
        (200 * 1.0 + 800 * 0.25 + 100 * 2.0) / 1e6)
    assert budget.cost("cheap", {"usage": usage}) == pytest.approx((1000 * 0.1 + 100 * 0.1) / 1e6)


@pytest.mark.looptime(False)
async def test_two_replicas_on_redis_share_one_tenant_budget(tmp_path, redis_url,
                                                             redis_prefix) -> None:
    """60 concurrent requests spread over two `llmguard serve --redis` processes: what both
    answered stays within the tenant's max_budget together; either replica's /v1/usage
    reports the shared spend."""
    from serve_helpers import HANG_GUARD, ChildServer

    path = write_config(tmp_path, config())
    args = ("--config", str(path), "--redis", redis_url, "--redis-prefix", redis_prefix)
    auth = {"authorization": f"Bearer {KEY}"}
    with ChildServer(*args) as one, ChildServer(*args) as two:
        async with httpx.AsyncClient(headers=auth, timeout=HANG_GUARD) as http:
            responses = await asyncio.gather(*(
                http.post((one, two)[i % 2].url + "/v1/chat/completions", json={
                    "model": "fake", "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"question {i}"}]})
                for i in range(60)))
            answered = [r.json() for r in responses if r.status_code == 200]
            refused = [r for r in responses if r.status_code == 429]
            assert len(answered) + len(refused) == 60 and answered and refused
            assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
            bill = sum(a["usage"]["prompt_tokens"] + 2 * a["usage"]["completion_tokens"]
                       for a in answered) / 1e6
            assert bill <= 0.0003
            give_up = time.monotonic() + HANG_GUARD  # settlements are written in the background
            while True:
                budget = (await http.get(one.url + "/v1/usage")).json()["budget"]
                settled = budget["reserved_usd"] == 0 and abs(budget["spent_usd"] - bill) < 1e-8
                if settled or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.05)
            assert budget["spent_usd"] == pytest.approx(bill, abs=1e-8)
            assert budget["reserved_usd"] == 0
