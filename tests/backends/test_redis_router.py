"""Router with the Redis backend: processes route against the same per-deployment quotas.

Real time (the server clock is the quota's clock): looptime is off, waits are short and bounded
generously (a loaded machine must pass).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, collections, sys, llmguard as lg
from llmguard.backends.redis import RedisBackend

async def main(url, prefix):
    backend = RedisBackend(url, prefix=prefix, timeout=5)
    sent = collections.Counter()

    def deployment(name, rpm):
        async def send(i):
            sent[name] += 1
            return name
        return lg.Deployment(send, name=name, rpm=rpm)

    router = lg.Router(deployment("a", 5), deployment("b", 10), max_wait=3, backend=backend)
    guarded = lg.guard(router)(deployment("base", 1).target)
    results = await asyncio.gather(*(guarded(i) for i in range(20)), return_exceptions=True)
    await backend.aclose()
    timed_out = sum(isinstance(r, lg.AdmissionTimeout) for r in results)
    print(sent["a"], sent["b"], timed_out, router.statistics().in_flight)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_two_processes_route_against_the_same_deployment_quotas(redis_url, redis_prefix):
    """Two processes, 20 calls each, over deployments of 5 and 10 RPM shared in Redis: exactly
    5 calls reach the first and 10 the second in all (each whole quota, never more); the other
    25 time out waiting for room."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_url, redis_prefix], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert sum(c[0] for c in counts) == 5
    assert sum(c[1] for c in counts) == 10
    assert sum(c[2] for c in counts) == 25
    assert all(c[3] == 0 for c in counts)


async def test_a_429_in_one_process_cools_the_deployment_down_in_all(redis_url, redis_prefix):
    """A deployment's 429 pause lives in Redis: another router (as another process would) with
    the same deployment name sends nothing there until the pause is over."""
    import asyncio

    import llmguard as lg
    from llmguard.backends.redis import RedisBackend
    from llmguard.testing import FakeLLM, make_error

    def router(llm_a, llm_b):
        backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=5)
        return backend, lg.Router(lg.Deployment(llm_a.send_message, name="a", rpm=100),
                                  lg.Deployment(llm_b.send_message, name="b", rpm=100),
                                  strategy="ordered", backend=backend)

    limited = FakeLLM([make_error(lg.FailureKind.RATE_LIMITED, retry_after=30)])
    backend1, first = router(limited, FakeLLM())
    await lg.guard(first)(limited.send_message)("hi")  # 429 at a, answered by b
    a2, b2 = FakeLLM(), FakeLLM()
    backend2, second = router(a2, b2)
    await asyncio.sleep(0.2)  # the pause is written in the background
    await lg.guard(second)(a2.send_message)("hi")
    assert (a2.call_count, b2.call_count) == (0, 1)
    assert second.statistics().deployments["a"].cooling_for > 25
    await backend1.aclose()
    await backend2.aclose()
