"""Ours in flight at a learned clock minute's boundary, carried into the new minute (a server
that queues may count them there), are let go once answered sooner after the boundary than a
round trip of ours takes (``_admission/ratelimit/crossed.py``). Virtual time where a server
runs, the wall clock pinned to the loop's."""

from collections import deque

import pytest

from llmguard._admission.ratelimit.fixed import FixedCount
from llmguard._admission.ratelimit.log import Entry
from llmguard.testing import FixedWindowServer
from late_start import run


def answered(time: float, at: float) -> Entry:
    entry = Entry(time, 1)
    entry.answered = at
    return entry


def minute(recent: deque, settles: bool = True) -> FixedCount:
    """A clock minute counted late (ours in flight carried), 60 requests, a 0.05 s margin."""
    fixed = FixedCount(60, 60.0, 0.05, 0.0, False, recent, on_clock=True, settles=settles)
    fixed.rebuild(59.9, recent)
    return fixed


def test_one_answered_sooner_after_the_boundary_than_a_round_trip_is_let_go() -> None:
    """32 sent at :56 answered at :58 (2 s round trips), 28 sent at :58: in flight at :00,
    carried into the new minute. Answered at :00.000001, 2 s after their sending, they
    were counted before it (no server answers sooner after counting); one answered at :02.5
    may have been counted after it (queued) and stays carried."""
    recent: deque = deque(answered(56.0, 58.0) for _ in range(32))
    late = [Entry(58.0, 1) for _ in range(28)]
    recent.extend(late)
    fixed = minute(recent)
    assert fixed.available(60.1) == 60 - 28  # all carried while in flight
    for entry in late[:27]:
        entry.answered = 60.000001
    assert fixed.available(60.5) == 60 - 1  # the last one still in flight
    late[27].answered = 62.5  # 4.5 s after its sending: maybe counted after :00
    assert fixed.available(62.6) == 60 - 1


def test_an_answer_before_any_other_shows_its_own_round_trip_bound() -> None:
    """Nothing answered when the minute rolled: each carried one's own round trip bounds
    how soon after counting it was answered (the fastest yet)."""
    late = [Entry(58.5, 1) for _ in range(10)]
    fixed = minute(deque(late))
    assert fixed.available(60.1) == 50
    late[0].answered = 60.5  # a 2 s round trip: counted by 58.55 at the latest
    assert fixed.available(60.6) == 51


def test_nothing_is_let_go_unless_the_count_settles() -> None:
    """Not a fixed window learned on a server that says nothing (one whose ``remaining``
    shows the minute's start, or one paced within a fixed count and a bucket while a first
    probe misread leaves a sliding window possible): ours in flight stay carried."""
    recent: deque = deque(answered(56.0, 58.0) for _ in range(32))
    late = [Entry(58.0, 1) for _ in range(28)]
    recent.extend(late)
    fixed = minute(recent, settles=False)
    for entry in late:
        entry.answered = 60.000001
    assert fixed.available(60.5) == 60 - 28


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize("phase", [56.0, 57.0])
async def test_a_silent_fixed_window_started_just_before_a_minute_fills_the_next_one(
        phase: float) -> None:
    """The README stack, only the quotas given, against a clock-minute window of 60 requests
    and 40,000 tokens that sends no rate-limit header, 180 calls (3x) from :56 or :57: 32 go
    at once, 28 as they are answered two seconds later, answered at :00. Before: those 28,
    in flight at the boundary, were carried into the next minute (31 of its 60 sent) and the
    last calls went a minute late, 1.91x and 1.92x the ideal. Now 1.03x, no 429."""
    server = FixedWindowServer(rpm=60, tpm=40_000, latency=2.0, rate_limit_headers=False)
    layer, wall, ideal = await run(server, phase, 180, jitter=None, tpm=40_000)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
