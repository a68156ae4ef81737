"""Tenants over HTTP: auth (401), isolation (404), provider-style quota answers (429 with
retry-after and x-ratelimit-* headers), and, under virtual time, priority and round-robin
scheduling across tenants at a model's concurrency slots and at its rpm queue."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import openai
import pytest
from serve_helpers import MESSAGES, CountingUpstream, chat, served, write_config

from llmguard._serve.config import load
from llmguard._serve.gateway import Gateway
from llmguard._serve.server import make_app

ACME_KEY = "acme-key-1-secret"
GLOBEX_KEY = "globex-key-2-secret"

CONFIG = f"""
[models.fake]
latency = 0.0

[models.private]
latency = 0.0

[models.slow]
latency = 0.5

[tenants.acme]
api_key_sha256 = "{hashlib.sha256(ACME_KEY.encode()).hexdigest()}"
rpm = 3
priority = "low"
max_priority = "normal"

[tenants.globex]
api_key_env = "SERVE_TEST_GLOBEX_KEY"
tpm = 1000
models = ["fake", "slow"]
"""


@pytest.fixture
def gateway_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVE_TEST_GLOBEX_KEY", GLOBEX_KEY)
    with served(write_config(tmp_path, CONFIG)) as server:
        yield server.url


def post(url: str, key: str | None, body: dict, **headers: str) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers)


@pytest.mark.looptime(False)
def test_missing_or_unknown_key_is_401_and_never_echoed(gateway_url) -> None:
    """No key or a wrong key: 401 invalid_api_key; the body does not repeat the key."""
    for key in (None, "sk-not-a-tenant-key-999"):
        r = post(gateway_url, key, chat())
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
        assert "sk-not-a-tenant" not in r.text
    assert httpx.get(gateway_url + "/v1/models").status_code == 401


@pytest.mark.looptime(False)
def test_other_tenants_models_and_usage_are_404(gateway_url) -> None:
    """A tenant sees only its models; another tenant's usage does not exist for it."""
    sdk = openai.OpenAI(base_url=gateway_url + "/v1", api_key=GLOBEX_KEY, max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["fake", "slow"]
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="private", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("private")
    own = httpx.get(gateway_url + "/v1/usage", headers={"authorization": f"Bearer {GLOBEX_KEY}"})
    assert own.status_code == 200 and own.json()["tenant"] == "globex"
    other = httpx.get(gateway_url + "/v1/usage/acme",
                      headers={"authorization": f"Bearer {GLOBEX_KEY}"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    # acme may use "private"
    assert post(gateway_url, ACME_KEY, chat("private")).status_code == 200


@pytest.mark.looptime(False)
def test_spent_request_quota_answers_429_like_a_provider(gateway_url) -> None:
    """rpm=3: three answers counting remaining down, then 429 with retry-after and
    x-ratelimit-limit/remaining/reset headers; another tenant is not affected."""
    remaining = []
    for _ in range(3):
        r = post(gateway_url, ACME_KEY, chat())
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    r = post(gateway_url, ACME_KEY, chat())
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    error = r.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    # the SDK sees a RateLimitError it can pace on
    sdk = openai.OpenAI(base_url=gateway_url + "/v1", api_key=ACME_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="fake", messages=MESSAGES)
    assert post(gateway_url, GLOBEX_KEY, chat()).status_code == 200
    usage = httpx.get(gateway_url + "/v1/usage",
                      headers={"authorization": f"Bearer {ACME_KEY}"}).json()
    assert usage["requests"] == 5 and usage["rejected"] == 2


@pytest.mark.looptime(False)
async def test_token_quota_and_request_too_large(gateway_url) -> None:
    """tpm=1000: a request estimated above the whole quota is 400 request_too_large; of two
    concurrent requests reserving 600+ tokens each, one is answered 429 of type tokens (a
    reservation is held while its call runs, then reconciled to the usage reported)."""
    headers = {"authorization": f"Bearer {GLOBEX_KEY}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers) as http:
        r = await http.post("/v1/chat/completions", json=chat(max_tokens=2000))
        assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"
        both = await asyncio.gather(*(http.post("/v1/chat/completions",
                                                json=chat("slow", max_tokens=600))
                                      for _ in range(2)))
    assert sorted(r.status_code for r in both) == [200, 429]
    refused = next(r for r in both if r.status_code == 429)
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.looptime(False)
def test_priority_header_is_capped_and_validated(gateway_url) -> None:
    """X-Priority above the tenant's max is served at its max (no error); a bad value is 400."""
    assert post(gateway_url, ACME_KEY, chat(), **{"x-priority": "high"}).status_code == 200
    r = post(gateway_url, ACME_KEY, chat(), **{"x-priority": "urgent"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_priority"


def test_tenant_priority_resolution(tmp_path, monkeypatch) -> None:
    """Default priority, capped at max_priority, case-insensitive."""
    monkeypatch.setenv("SERVE_TEST_GLOBEX_KEY", GLOBEX_KEY)
    gateway = Gateway(load(str(write_config(tmp_path, CONFIG))))
    acme = gateway.tenants.by_name["acme"]
    assert acme.priority(None) == -1
    assert acme.priority("HIGH") == 0 and acme.priority("low") == -1
    assert gateway.tenants.authenticate(ACME_KEY) is acme
    assert gateway.tenants.authenticate("acme") is None


FAIR = """
[models.slow]
latency = 1.0
seconds_per_token = 0.0
retries = 0
concurrency = 1

[tenants.a]
api_key_sha256 = "{a}"
max_priority = "high"

[tenants.b]
api_key_sha256 = "{b}"
"""


async def test_round_robin_across_tenants_and_priority_first(tmp_path) -> None:
    """With one slot, waiting calls are served by priority, then alternating between tenants
    (a tenant that queued many does not starve one that queued few)."""
    text = FAIR.format(a=hashlib.sha256(b"a").hexdigest(), b=hashlib.sha256(b"b").hexdigest())
    gateway = Gateway(load(str(write_config(tmp_path, text))))
    model = gateway.models["slow"]
    a, b = gateway.tenants.by_name["a"], gateway.tenants.by_name["b"]
    done: list[str] = []

    async def one(tenant, label: str, priority: int = 0) -> None:
        await gateway.call(model, tenant, chat("slow"), priority)
        done.append(label)

    tasks = [asyncio.create_task(one(a, f"a{i}")) for i in range(1, 5)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one(b, f"b{i}")) for i in range(1, 3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(one(a, "a-high", priority=1)))
    await asyncio.gather(*tasks)
    await gateway.aclose()
    assert done == ["a1", "a-high", "a2", "b1", "a3", "b2", "a4"]


RATE = """
[models.fake]
latency = 0.0
seconds_per_token = 0.0
rpm = 1
max_wait = 1000

[tenants.a]
api_key_sha256 = "{a}"

[tenants.b]
api_key_sha256 = "{b}"
max_priority = "high"
"""


async def test_the_model_rpm_queue_serves_priority_then_tenants_in_turn(tmp_path) -> None:
    """Issue 34 #11, over HTTP (the app ``llmguard serve`` runs, in this loop: virtual time):
    behind tenant a's burst on an ``rpm = 1`` model, tenant b's ``X-Priority: high`` call is
    the next one sent, then the two tenants' backlogs alternate, one per window."""
    text = RATE.format(a=hashlib.sha256(b"key-a").hexdigest(),
                       b=hashlib.sha256(b"key-b").hexdigest())
    app = make_app(load(str(write_config(tmp_path, text))))
    sent: list[str] = []
    model = app.state.gateway.models["fake"]
    model.upstream = CountingUpstream(model.upstream, sent)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async def ask(key: str, content: str, **headers: str) -> int:
        headers["authorization"] = f"Bearer {key}"
        body = {"model": "fake", "messages": [{"role": "user", "content": content}]}
        return (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code

    calls = [("key-a", f"a{i}", {}) for i in range(4)] + [("key-b", f"b{i}", {}) for i in range(2)]
    calls.append(("key-b", "b-high", {"x-priority": "high"}))
    tasks = []
    try:
        for key, content, headers in calls:
            tasks.append(asyncio.create_task(ask(key, content, **headers)))
            await asyncio.sleep(1)  # each joins the line in this order
        assert await asyncio.gather(*tasks) == [200] * len(calls)
    finally:
        await client.aclose()
        await app.state.gateway.aclose()
    assert sent == ["a0", "b-high", "a1", "b0", "a2", "b1", "a3"]


CAPPED = """
[models.slow]
latency = 1.0
seconds_per_token = 0.0
retries = 0

[tenants.a]
api_key_sha256 = "{a}"
rpm = 5
concurrency = 1
"""


async def test_a_request_cancelled_while_waiting_for_the_tenants_cap_gives_its_quota_back(
        tmp_path) -> None:
    """The tenant's quota counts requests sent to a provider: one cancelled while it waits for
    the tenant's concurrency cap (the client left) was never sent, so its reservation is given
    back (it stayed counted before: the gate refunded only admission errors)."""
    gateway = Gateway(load(str(write_config(tmp_path, CAPPED.format(
        a=hashlib.sha256(b"a").hexdigest())))))
    model, tenant = gateway.models["slow"], gateway.tenants.by_name["a"]
    first = asyncio.create_task(gateway.call(model, tenant, chat("slow"), 0))
    await asyncio.sleep(0.1)  # the first holds the cap
    waiting = asyncio.create_task(gateway.call(model, tenant, chat("slow"), 0))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await first
    requests, _, _ = gateway.tenants.backend.headroom(tenant.name, tenant.quotas)
    await gateway.aclose()
    assert requests == 4  # only the first counted
