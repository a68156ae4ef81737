"""SimulatedProvider: capacity, queueing latency, strict sliding-window quotas."""

import asyncio

import pytest

import llmguard
from llmguard.testing import Overloaded, RateLimited, SimulatedProvider

MSG = [{"role": "user", "content": "hello"}]


async def test_calls_within_capacity_take_base_latency() -> None:
    """Up to `capacity` concurrent calls each take exactly the base latency."""
    provider = SimulatedProvider(capacity=4, latency=2.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(provider.acompletion(messages=MSG) for _ in range(4)))
    assert loop.time() - start == pytest.approx(2.0)
    assert provider.statistics().served == 4


async def test_latency_stretches_beyond_capacity() -> None:
    """Beyond capacity, service time stretches with the number in flight."""
    provider = SimulatedProvider(capacity=2, latency=1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(provider.acompletion(messages=MSG) for _ in range(4)))
    assert loop.time() - start == pytest.approx(2.0)


async def test_overload_beyond_threshold() -> None:
    """More than `overload_at` in flight answers 503, classified as OVERLOADED."""
    provider = SimulatedProvider(capacity=1, latency=1.0, overload_at=2)
    results = await asyncio.gather(
        *(provider.acompletion(messages=MSG) for _ in range(3)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], Overloaded)
    assert llmguard.classify(errors[0]).kind is llmguard.FailureKind.OVERLOADED


async def test_rpm_quota_answers_429_with_retry_after() -> None:
    """The (rpm+1)-th request in a window gets 429 with a Retry-After that, honoured, succeeds."""
    provider = SimulatedProvider(rpm=3, latency=0.1)
    for _ in range(3):
        await provider.acompletion(messages=MSG)
    with pytest.raises(RateLimited) as info:
        await provider.acompletion(messages=MSG)
    failure = llmguard.classify(info.value)
    assert failure.kind is llmguard.FailureKind.RATE_LIMITED
    assert 59 < failure.retry_after <= 60.001
    await asyncio.sleep(failure.retry_after)
    await provider.acompletion(messages=MSG)
    stats = provider.statistics()
    assert (stats.served, stats.rate_limited, stats.peak_window_requests) == (4, 1, 3)


async def test_tpm_counts_max_tokens_at_admission() -> None:
    """TPM charges prompt plus max_tokens; a request over the remaining budget gets 429."""
    provider = SimulatedProvider(tpm=1000, latency=0.0)
    await provider.acompletion(messages=MSG, max_tokens=900)
    with pytest.raises(RateLimited):
        await provider.acompletion(messages=MSG, max_tokens=200)
    assert provider.statistics().peak_window_tokens <= 1000


async def test_capacity_can_change_mid_run() -> None:
    """Lowering capacity mid-run makes the same load slower."""
    provider = SimulatedProvider(capacity=4, latency=1.0)
    loop = asyncio.get_running_loop()
    provider.capacity = 2
    start = loop.time()
    await asyncio.gather(*(provider.acompletion(messages=MSG) for _ in range(4)))
    assert loop.time() - start == pytest.approx(2.0)


def test_bad_configuration_is_rejected() -> None:
    """Zero capacity or a negative latency is a clear ValueError."""
    with pytest.raises(ValueError, match="capacity"):
        SimulatedProvider(capacity=0)
    with pytest.raises(ValueError, match="latency"):
        SimulatedProvider(latency=-1)
