"""The fault-injection layer: every failure kind, seeded, classifiable."""

import asyncio
from collections import Counter

import pytest

import llmguard as lg
from llmguard import FailureKind
from llmguard.testing import FakeLLM, Faults, make_error


@pytest.mark.parametrize("kind", [k for k in FailureKind if k is not FailureKind.UNKNOWN])
def test_injected_errors_classify_as_their_kind(kind: FailureKind) -> None:
    """make_error(kind) builds an exception that classify() maps back to kind."""
    assert lg.classify(make_error(kind, retry_after=2.0)).kind is kind


async def test_error_rate_and_mix_are_seeded() -> None:
    """The same seed injects the same faults; the rate is roughly what was asked."""

    async def run() -> Counter[str]:
        faults = Faults(error_rate=0.3, seed=7)
        guarded = lg.guard(faults)(FakeLLM().send_message)
        outcomes: Counter[str] = Counter()
        for i in range(1000):
            try:
                await guarded(str(i))
                outcomes["ok"] += 1
            except Exception as exc:
                outcomes[lg.classify(exc).kind.value] += 1
        assert faults.statistics().calls == 1000
        return outcomes

    first, second = await run(), await run()
    assert first == second
    assert 250 < 1000 - first["ok"] < 350


async def test_latency_spikes_and_hangs() -> None:
    """A spike delays the answer; a hang never answers until the caller gives up."""
    loop = asyncio.get_running_loop()
    spiky = lg.guard(Faults(spike_rate=1.0, spike=3.0))(FakeLLM().send_message)
    start = loop.time()
    await spiky("x")
    assert loop.time() - start == pytest.approx(3.0)
    hanging = lg.guard(Faults(hang_rate=1.0))(FakeLLM().send_message)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(100):
            await hanging("x")


async def test_429_storm_carries_retry_after_to_its_end() -> None:
    """During a storm every call is a 429 whose Retry-After points at the storm's end."""
    faults = Faults(storm_every=60, storm_for=10)
    guarded = lg.guard(faults)(FakeLLM().send_message)
    await asyncio.sleep(60 - asyncio.get_running_loop().time() % 60 + 4)  # 4 s into a storm
    with pytest.raises(Exception) as info:
        await guarded("x")
    failure = lg.classify(info.value)
    assert failure.kind is FailureKind.RATE_LIMITED and failure.retry_after == pytest.approx(6)
    await asyncio.sleep(failure.retry_after)
    assert await guarded("x") == "echo: x"


async def test_truncated_streams_break_after_the_first_chunk() -> None:
    """truncate_rate makes a streamed answer fail with a connection error after one chunk."""

    async def stream(prompt):
        for i in range(5):
            yield i

    guarded = lg.guard(Faults(truncate_rate=1.0))(stream)
    seen = []
    with pytest.raises(ConnectionError):
        async for chunk in guarded("x"):
            seen.append(chunk)
    assert seen == [0]


def test_bad_configuration() -> None:
    """Rates outside [0, 1], empty kinds and storms longer than their period are rejected."""
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        Faults(kinds={})
    with pytest.raises(ValueError, match="storm_every"):
        Faults(storm_every=5, storm_for=10)
