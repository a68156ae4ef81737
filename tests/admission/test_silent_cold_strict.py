"""A fixed clock-minute window that says nothing, charging 1.11x our estimate (236 a call:
42 a minute, 88 tokens to spare), the opening burst 0.8 s on the way (later requests 10 ms,
each 0-10 ms more), started at :55: the cold-network table of
``benchmarks/bench_composition.py`` made strict. Virtual time, the wall clock pinned to the
loop's; the pure part directly."""

import asyncio
import math

import pytest

from llmguard._admission.ratelimit import bounds
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import FixedWindowServer
from late_start import run


def test_a_minute_s_probes_bound_the_charge_with_each_count_rounded_up() -> None:
    """42 of ours of 212 tokens served in one clock minute of a 10,000 TPM fixed window: it
    charges at most 238 a call (each an integer, 42 of them within 10,000), which a factor of
    (10,000 - 42) / (42 * 212) rounds up to; 10,000 / (42 * 212) rounded up to 239, 41 a
    minute where the server admits 42."""
    w = Window((Quota(60, 60.05, False, learn=True, margin=0.05),
                Quota(10_000, 60.05, True, learn=True, margin=0.05)))
    w.shape.candidate = 60.0
    entries = [w.add(61.0, 212) for _ in range(42)]
    bound = bounds.clocked(w, entries[-1])
    assert math.isclose(bound, (10_000 - 42) / (42 * 212))
    assert math.ceil(212 * bound) * 42 <= 10_000


@pytest.mark.usefixtures("pinned_wall_clock")
async def test_a_strict_silent_fixed_window_on_a_cold_network_fills_its_minutes() -> None:
    """The README stack with only the quotas, 126 calls (3x) from :55. Before: 1.90x the
    ideal, one 429: paced at the most the minute's probes showed it charges (1.1231x our
    estimate, 239 a call), 41 a minute, the 126th call a minute late. Now 1.03x."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=1 / 0.9,
                               rate_limit_headers=False)
    first: list[float] = []

    def latency(_rng: object) -> float:  # the trips started within a second of the first
        now = asyncio.get_running_loop().time()
        if not first:
            first.append(now)
        return 0.8 if now < first[0] + 1.0 else 0.01

    server.send_latency = latency
    layer, wall, ideal = await run(server, 55.0, 126)
    assert server.statistics().rate_limited <= 1, layer.statistics().shape
    assert wall <= 1.05 * ideal, (wall, ideal, wall / ideal)
