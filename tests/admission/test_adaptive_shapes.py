"""AdaptiveConcurrency against the provider shapes that collapsed it (issue #35 item 1).

Latency that varies without load took the limit to 1 (1.1 answers/s against 64 for a static
limit), a provider whose latency tripled at the same capacity took it 70 -> 1 for minutes, and
instant 429s beyond a fixed cap made 47% of all requests 429s. Then, with those fixed, the ramp
to a large capacity with 1-3 s latency took 35 s (93% of a static limit's answers over 300 s),
and a baseline learned from small noisy windows sat 20% low. Each layer test drives closed-loop
clients through the default layer for a few simulated minutes (looptime).
"""

import asyncio
import random
import statistics

import llmguard as lg
from llmguard import AdaptiveConcurrency
from llmguard._admission.samples import Window
from llmguard.algorithms import Gradient
from llmguard.testing import Overloaded, SimulatedProvider, make_error

MSG = [{"role": "user", "content": "hi"}]


class NoisyProvider(SimulatedProvider):
    """Unloaded latency drawn per call (seeded): latency that varies with no load behind it."""

    def __init__(self, low: float, high: float, **options) -> None:
        super().__init__(**options)
        self.low, self.high = low, high
        self._noise = random.Random(3)

    async def _serve(self, input_tokens: int, output: int, charged: int) -> None:
        self.latency = self._noise.uniform(self.low, self.high)  # read before the first await
        await super()._serve(input_tokens, output, charged)


async def _drive(layer, send, seconds: float, clients: int) -> tuple[int, int, list[int]]:
    """Closed-loop clients (1 s pause after an error): (successes, errors, limit each second)."""
    guarded = lg.guard(layer)(send)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    ok = errors = 0
    limits: list[int] = []

    async def client() -> None:
        nonlocal ok, errors
        while loop.time() < end:
            try:
                await guarded(messages=MSG)
                ok += 1
            except Exception:
                errors += 1
                await asyncio.sleep(1.0)

    async def watch() -> None:
        while loop.time() < end:
            await asyncio.sleep(1.0)
            limits.append(layer.statistics().limit)

    await asyncio.gather(watch(), *(client() for _ in range(clients)))
    return ok, errors, limits


async def test_latency_noise_without_load_does_not_shrink_the_limit() -> None:
    """64 clients, a provider with room for 256 and latency uniform 0.75-1.25 s per call: the
    limit stays at the demand and the clients get about 64 answers/s, as with a static limit
    (the lowest latency seen was the baseline, so every window looked queued: 1.1/s)."""
    provider = NoisyProvider(0.75, 1.25, capacity=256, overload_at=1024)
    ok, errors, limits = await _drive(AdaptiveConcurrency(), provider.acompletion, 180, 64)
    assert errors == 0
    assert ok / 180 >= 0.9 * 64, ok / 180
    assert min(limits[60:]) >= 60, min(limits[60:])


def test_gradient_does_not_shrink_on_noise_alone() -> None:
    """The algorithm alone: windows of 64 calls whose latency is noise around 1 s (standard
    error 0.06 s, as in windows of a few calls) never take the limit below the load."""
    rng = random.Random(5)
    gradient = Gradient(64, max_limit=1024)
    for _ in range(500):
        rtt = 1.0 + rng.gauss(0, 0.06)
        gradient.on_window(rtt, 64, False, 0.06)
    assert gradient.limit >= 64


async def test_a_step_in_latency_at_the_same_capacity_re_baselines() -> None:
    """Capacity 16 (latency x in flight/16 beyond), 64 clients; at 60 s the provider's own
    latency triples. The limit does not collapse: within a minute it is back at the capacity
    and throughput is the capacity's 16 / 3 s (it went 70 -> 1 for two minutes)."""
    provider = SimulatedProvider(capacity=16, latency=1.0, overload_at=48)
    layer = AdaptiveConcurrency()

    async def send(**kwargs):
        try:
            return await provider.acompletion(**kwargs)
        except Overloaded:
            raise make_error(lg.FailureKind.RATE_LIMITED, retry_after=1.0) from None

    async def slower() -> None:
        await asyncio.sleep(60)
        provider.latency = 3.0

    asyncio.get_running_loop().create_task(slower())
    before = provider.statistics().served
    _, errors, limits = await _drive(layer, send, 180, 64)
    assert errors == 0
    settled = limits[120:]
    assert statistics.median(settled) >= 16, settled
    assert min(settled) >= 8, settled
    served_late = provider.statistics().served - before
    assert served_late > 0


async def test_instant_429s_beyond_a_cap_stay_rare() -> None:
    """64 clients, a provider that answers 429 at once beyond 16 in flight (latency flat up to
    there: no latency signal): under 1% of calls are 429s and the limit holds at the cap (a
    static 16 gets none; the layer let 47% through)."""
    provider = NoisyProvider(0.95, 1.05, capacity=16, overload_at=16)

    async def send(**kwargs):
        try:
            return await provider.acompletion(**kwargs)
        except Overloaded:
            raise make_error(lg.FailureKind.RATE_LIMITED, retry_after=1.0) from None

    ok, errors, limits = await _drive(AdaptiveConcurrency(), send, 300, 64)
    assert errors / (ok + errors) < 0.01, (errors, ok)
    assert statistics.median(limits[60:]) == 16
    assert ok / 300 >= 0.95 * 16


def test_gradient_baseline_is_the_windows_mean_not_their_low_tail() -> None:
    """64 callers, latency uniform 1-3 s per call: windows of 4 .. 64 calls (the limit ramping
    up from 4) give a baseline within 5% of the true 2 s, and the limit never falls below the
    demand. (A moving floor from below sat at 1.6 s: every steady window then looked queued.)"""
    rng = random.Random(11)
    gradient = Gradient(4, max_limit=1024)
    for _ in range(200):
        calls = min(int(gradient.limit), 64)
        rtts = [rng.uniform(1.0, 3.0) for _ in range(calls)]
        error = statistics.stdev(rtts) / len(rtts) ** 0.5
        gradient.on_window(statistics.fmean(rtts), calls, False, error)
        assert gradient.limit >= min(calls, 64)
    assert 1.9 <= gradient.base <= 2.1, gradient.base


def test_window_reports_its_busier_half() -> None:
    """A window that mixes calls sent under two limits reports the busier calls' latency with
    their in-flight count: the pair measures one load (the median count with the mean latency
    of all read a doubling that queued as no queue)."""
    window = Window()
    for _ in range(4):
        window.add(1.0, 4, False)
        window.add(1.5, 8, False)
    rtt, inflight, dropped, _, _ = window.flush()
    assert (rtt, inflight, dropped) == (1.5, 8, False)


async def test_ramp_to_a_large_capacity_with_long_noisy_latency() -> None:
    """128 callers, room for 512, latency uniform 1-3 s: from 4, the limit doubles per round
    trip to the demand in well under 30 s (1.4x per two round trips took over a minute), and
    over a minute the callers get at least 80% of the 64 answers/s a static 128 gives."""
    provider = NoisyProvider(1.0, 3.0, capacity=512, overload_at=2048)
    ok, errors, limits = await _drive(AdaptiveConcurrency(max=1024), provider.acompletion,
                                      60, 128)
    assert errors == 0
    assert min(limits[20:]) >= 128, limits
    assert ok / 60 >= 0.8 * 64, ok / 60


async def test_instant_429s_each_probe_costs_one_refusal() -> None:
    """The cap found, each later probe one step past it costs one 429, not a chain of them: a
    refusal lowers the limit before its permit passes to the next waiter (which was sent at
    once, past the cap, and refused in turn)."""
    provider = NoisyProvider(0.95, 1.05, capacity=16, overload_at=16)

    async def send(**kwargs):
        try:
            return await provider.acompletion(**kwargs)
        except Overloaded:
            raise make_error(lg.FailureKind.RATE_LIMITED, retry_after=1.0) from None

    layer = AdaptiveConcurrency()
    await _drive(layer, send, 20, 64)  # the ramp and the cap found
    ok, later, limits = await _drive(layer, send, 100, 64)
    assert later <= 2, later  # probes after 4 and 16 round trips at the cap, then 64
    assert statistics.median(limits) == 16
    assert ok / 100 >= 0.97 * 16
