"""The charge factor read from a high-rate stream's token readings (issue #30): answers 0.05 s
away, up to 64 calls in flight, every answer with ``x-ratelimit-remaining-tokens``. In
virtual time; what one group of readings measures (:func:`calibration.measure`) directly."""

import asyncio
import math
from collections import deque
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.calibration import measure, unread
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.queued import Queued
from llmguard.testing import FixedWindowServer, SlidingWindowServer, TokenBucketServer


def ask(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question number {i}"}], "max_tokens": 200}


@pytest.mark.parametrize("charge_factor", [1.0, 1 / 0.9])
@pytest.mark.parametrize("server_type", [TokenBucketServer, FixedWindowServer,
                                         SlidingWindowServer])
async def test_a_paced_streams_readings_keep_the_factor_at_what_the_server_charges(
        server_type: Any, charge_factor: float) -> None:
    """Demand twice the token quota through RateLimit(rpm, tpm) over ConcurrencyLimit(64), a
    server charging the estimate (or 1.11x it). Once the opening burst is read (10 s), the
    factor stays within 3% of what the server charges. Before, on a window (fixed, read as
    sliding from a start at :00, or sliding): groups of ~3 readings, whose difference was
    mostly ours leaving the window a minute on, read 1.0 to 3.0 to the end of the run (3.0 at
    a fifth of the answers). A bucket's refill is known and added back: it held already."""
    server = server_type(rpm=3000, tpm=300_000, latency=0.05, charge_factor=charge_factor)
    layer = lg.RateLimit(rpm=3000, tpm=300_000)
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), layer, lg.ConcurrencyLimit(64))(server.acompletion)
    loop = asyncio.get_running_loop()
    factors: list[float] = []

    async def call(i: int) -> None:
        await guarded(**ask(i))
        if loop.time() > 10.0:
            factors.append(layer.backend._windows[None].charge.factor)

    await asyncio.gather(*(call(i) for i in range(2500)))
    assert len(factors) > 500
    assert charge_factor * 0.97 <= min(factors) and max(factors) <= charge_factor * 1.03, (
        min(factors), max(factors))


def stream(*sends: float, factor: float = 236 / 212, rate: float = 5000.0,
           level: float = 1000.0) -> list[tuple[int, Entry]]:
    """Ours sent at ``sends`` (estimated at 212 tokens, charged ``factor`` times that) into a
    bucket refilling ``rate`` a second: each one's reading as the server reports it."""
    readings, spent = [], 0.0
    for seq, at in enumerate(sends):
        spent += math.ceil(212 * factor - 1e-9)
        readings.append((math.floor(level + rate * at - spent), Entry(at, 212, None, seq, 0)))
    return readings


def test_the_first_to_arrive_is_the_highest_reading_less_the_refill() -> None:
    """Two of ours 47 ms apart at 5,000 tokens a second: the later one reads higher than the
    first (the refill outran its charge). Taken as the first to arrive, a 1.11x charge read
    0.56 (then 1.0, the floor: under the server's count); without the refill, 1.11."""
    burst: list[Any] = [None, [], 0.0]
    readings = stream(0.0, 0.0474, 0.05)
    assert readings[1][0] > readings[0][0]
    for remaining, entry in readings:
        measured = measure(burst, 0.05, remaining, entry, 5000.0)
    assert measured == pytest.approx(236 / 212, rel=0.01)


def test_a_group_with_one_of_ours_unread_amid_it_only_bounds_the_factor_from_above() -> None:
    """Answers of one instant come in any order: with the one sent between two others not
    read yet, the drop between the readings holds three charges over two estimates (1.67x a
    1.11x charge). Such a group may bring the factor down, never up, until that one is read;
    one still queued below us (admitted, marked queued by the limiter below) holds nothing
    back."""
    readings = stream(0.0, 0.01, 0.02, 0.03)
    recent = deque(entry for _, entry in readings)
    burst: list[Any] = [None, [], 0.0]
    for remaining, entry in (readings[0], readings[1], readings[3]):
        measured = measure(burst, 0.05, remaining, entry, 5000.0, recent=recent, most=1.2)
    assert measured is None  # 1.67x, above the factor in force, with the third unread
    assert measure([None, [], 0.0], 0.0, 0, readings[0][1], 0.0) is None
    burst = [None, [], 0.0]
    for remaining, entry in (readings[0], readings[1], readings[3]):
        measured = measure(burst, 0.05, remaining, entry, 5000.0, recent=recent, most=2.0)
    assert measured == pytest.approx(3 * 236 / 424, rel=0.01)  # below 2.0: it may come down
    measured = measure(burst, 0.05, readings[2][0], readings[2][1], 5000.0, recent=recent,
                       most=1.2)
    assert measured == pytest.approx(236 / 212, rel=0.01)  # read: exact
    queued = Entry(0.015, 212, None, 4, 0)  # admitted amid them, waiting for a slot below
    below = Queued()
    below.mark(queued)
    assert not unread(deque([*recent, queued]), burst[1])
    below.unmark(queued)  # sent now: in flight, unread
    assert unread(deque([*recent, queued]), burst[1])

