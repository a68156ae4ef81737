"""Router through litellm against real HTTP servers on loopback: each deployment a dict of
litellm arguments (its own api_base and key), quotas given or learned from the deployment's
own response headers. Real time (sockets): short waits, generous bounds."""

from __future__ import annotations

import asyncio

import pytest

import llmguard as lg
from llmguard.integrations import litellm as lg_litellm
from llmguard.testing import LoopbackServer, TokenBucketServer

pytestmark = pytest.mark.looptime(False)

MESSAGES = [{"role": "user", "content": "hello"}]


async def test_deployments_behind_litellm_learn_and_keep_their_own_quotas() -> None:
    """Two OpenAI-compatible servers (5 and 10 requests a minute), 15 calls at once through
    litellm: the first deployment's quota is learned from its x-ratelimit-limit-* headers,
    the second's given; every call is answered, no server answers 429, each server sees at
    most its quota, and each record names the deployment that answered."""
    small, large = TokenBucketServer(rpm=5, latency=0.05), TokenBucketServer(rpm=10, latency=0.05)
    async with LoopbackServer(small) as a, LoopbackServer(large) as b:
        router = lg.Router(
            lg.Deployment({"api_base": a.base_url, "api_key": "sk-a"}, name="a",
                          refill="continuous"),
            lg.Deployment({"api_base": b.base_url, "api_key": "sk-b"}, name="b", rpm=10,
                          refill="continuous"),
            max_wait=30)
        chat = lg_litellm.completion(lg.Pipeline(name="chat").then(router))
        with lg.recording() as records:
            replies = await asyncio.wait_for(asyncio.gather(*(
                chat(model="openai/m", messages=MESSAGES, max_tokens=8) for _ in range(15))),
                timeout=60)
    assert len(replies) == 15
    assert small.statistics().rate_limited == large.statistics().rate_limited == 0
    assert (small.statistics().served, large.statistics().served) == (5, 10)
    assert sorted(r.deployment for r in records) == ["a"] * 5 + ["b"] * 10
    stats = router.statistics().deployments
    assert stats["a"].quotas_known and stats["a"].requests_available == 0
    assert "sk-a" not in repr(router) and "sk-a" not in repr(router.deployments[0])
