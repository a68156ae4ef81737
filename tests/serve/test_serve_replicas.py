"""Two `llmguard serve --redis` processes on one Redis act as one gateway: a tenant's quota is
shared (never exceeded across them), so are its usage report and the models' cache."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest
from serve_helpers import HANG_GUARD, ChildServer, chat, write_config

pytestmark = pytest.mark.looptime(False)

KEY = "replica-tenant-key"
CONFIG = f"""
[models.fake]
latency = 0.0

[models.cached]
latency = 0.0
cache_ttl = 300

[tenants.t]
api_key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
rpm = 10
"""
AUTH = {"authorization": f"Bearer {KEY}"}


async def test_two_replicas_share_one_tenant_quota(tmp_path, redis_url, redis_prefix) -> None:
    """40 requests spread over two replicas against rpm=10: exactly 10 answered, 30 refused
    with 429, whichever replica each went to."""
    config = write_config(tmp_path, CONFIG)
    args = ("--config", str(config), "--redis", redis_url, "--redis-prefix", redis_prefix)
    with ChildServer(*args) as one, ChildServer(*args) as two:
        async with httpx.AsyncClient(headers=AUTH, timeout=HANG_GUARD) as http:
            responses = await asyncio.gather(*(
                http.post((one, two)[i % 2].url + "/v1/chat/completions", json=chat())
                for i in range(40)))
            statuses = [r.status_code for r in responses]
            assert statuses.count(200) == 10, statuses
            assert statuses.count(429) == 30
            by_replica = [statuses[i::2].count(200) for i in range(2)]
            assert sum(by_replica) == 10
            # the usage report of either replica covers both (written in the background)
            give_up = time.monotonic() + HANG_GUARD
            while True:
                usage = (await http.get(two.url + "/v1/usage")).json()
                if usage["requests"] == 40 or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.05)
            assert usage["scope"] == "all replicas"
            assert usage["requests"] == 40 and usage["rejected"] == 30


async def test_replicas_share_the_cache(tmp_path, redis_url, redis_prefix) -> None:
    """An answer cached by one replica is served by the other (same completion id)."""
    config = write_config(tmp_path, CONFIG.replace("rpm = 10", "rpm = 1000"))
    args = ("--config", str(config), "--redis", redis_url, "--redis-prefix", redis_prefix)
    with ChildServer(*args) as one, ChildServer(*args) as two:
        async with httpx.AsyncClient(headers=AUTH, timeout=HANG_GUARD) as http:
            first = (await http.post(one.url + "/v1/chat/completions", json=chat("cached")))
            give_up = time.monotonic() + HANG_GUARD
            while True:  # the cache write is asynchronous to the answer
                second = await http.post(two.url + "/v1/chat/completions", json=chat("cached"))
                if second.json()["id"] == first.json()["id"] or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.05)
    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
