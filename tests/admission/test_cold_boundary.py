"""A fixed window's boundary learned from a cold opening burst: the reset it is read from is
timed from our admission, the server counted from the arrival, the way there later. That way
(the margin when the reset was read) stays the boundary's doubt after the margin shrinks to the
warm requests', until their readings place the boundary. Before: the learned boundary stayed
0.8 s early, each new minute's burst went 0.75 s before the server's (32 429s in one, the
circuit breaker opened: 32 calls failed, ``bench_composition.py --demand 6`` cold table). The
arithmetic is tested directly; the stack in virtual time, the wall clock pinned to the loop's."""

import asyncio

import pytest

from llmguard._admission.ratelimit import learn, learn_refusal
from llmguard._admission.ratelimit.fixed import narrow
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import FixedWindowServer
from late_start import run

COLD, WARM = 0.8, 0.01  #: seconds on the way: the opening burst's, then every later one's


def test_a_reading_narrows_where_the_boundary_lies() -> None:
    """A reading puts the boundary at its reset past our admission, or up to its way there
    later: where the two ranges meet, whichever window of the minute it points to."""
    assert narrow(59.2, 0.8, 60.0, 179.99, 0.05) == pytest.approx((59.99, 0.01))
    assert narrow(59.2, 0.8, 60.0, 59.0, 0.5) == pytest.approx((59.2, 0.3))
    # a range that misses the one known (a reading off by more than its way there): both held
    assert narrow(59.2, 0.5, 60.0, 119.99, 0.02) == pytest.approx((59.2, 0.81))


def test_the_doubt_of_a_boundary_outlives_the_margin_it_was_read_with() -> None:
    """A boundary read with a margin of 0.8 s (a cold request's way there: admitted at :55,
    counted at :55.8, the server's minute ending at :60, its reset 4.2 s) keeps that doubt
    when the margin shrinks to the floor: the next minute's burst goes 0.8 s past the
    boundary read, not 0.75 s before the server's. A warm request's reading then places the
    boundary within its own way there: the burst after goes just past the server's."""
    w = Window((Quota(60, 60.8, False, learn=True, margin=COLD),))
    w.shape.margin = COLD
    opening = [w.take(55.0, 0) for _ in range(60)]
    w.cap(56.61, False, 0, 4.2, ticket=opening[-1], limit=60)
    assert w.shape.kind == "fixed" and w.shape.epoch == pytest.approx(59.2)
    fixed = w.tracks[0].fixed
    assert fixed.skew() == pytest.approx(COLD)
    burst = [w.take(60.0, 0) for _ in range(60)]  # 59.2 + 0.8: the server's new minute
    assert all(burst) and w.take(60.5, 0) is None
    w.shape.margin = fixed.margin = 0.05  # a minute of warm answers later (``latency.retime``)
    assert fixed.wait(119.3, 1) == pytest.approx(120.0 - 119.3, abs=1e-5)  # (before: 0)
    w.cap(62.02, False, 0, 59.99, ticket=burst[-1], limit=60)  # arrived 60.01: 120 - 60.01
    assert w.shape.epoch == pytest.approx(59.99) and w.shape.doubt <= 0.05
    assert fixed.epoch == w.shape.epoch and fixed.skew() == pytest.approx(0.05)
    assert fixed.wait(119.3, 1) == pytest.approx(120.04 - 119.3, abs=1e-5)


def test_a_429_just_after_a_boundary_that_was_early_holds_to_that_boundary() -> None:
    """A request sent within the skew after a learned boundary may reach the server before
    its own: its 429 holds to that boundary (here the server's pause ends later: it wins),
    not to the next one, a window of idling later (the server asked for 0.69 s)."""
    w = Window((Quota(60, 60.5, False, learn=True, margin=0.5),))
    w.shape.learn("fixed", "a reset (test)", 59.2, 0.5)
    learn.become_fixed(w, 59.0)
    ticket = w.take(59.3, 0)
    until = learn_refusal.refused(w, 59.32, ticket, 0.69, 0.0)
    assert until == pytest.approx(59.32 + 0.69)  # not 119.2 + its skew


@pytest.mark.parametrize("demand", [3, 6, 10])
async def test_a_cold_client_started_late_paces_a_fixed_window_without_429s(demand: int) -> None:
    """The README stack with only the quotas against a 60 RPM, 40,000 TPM clock-minute server
    that sends its headers, ``demand`` x its 60 requests a minute at once from :55, the
    opening burst 0.8 s on the way (later requests 10 ms): every call done, no 429, within
    1.05x the server's ideal. Before: at 6x and 10x 32 429s at :59.26 of the third minute,
    the circuit breaker open, 32 calls failed."""
    server = FixedWindowServer(rpm=60, tpm=40_000, latency=2.0)

    def latency(_rng: object) -> float:  # the trips started within a second of the first
        return COLD if asyncio.get_running_loop().time() < 56.0 else WARM

    server.send_latency = latency
    _, wall, ideal = await run(server, 55.0, 60 * demand, jitter=None, tpm=40_000)
    assert server.statistics().rate_limited == 0
    assert wall <= 1.05 * ideal, (wall, ideal, wall / ideal)
