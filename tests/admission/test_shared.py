"""What a shared backend hands between processes (``shared.py`` and ``Charge.shared``): the
learned shape with whether the server counts late, and the calibrated token charge. Pure
functions of their inputs, tested directly."""

import pytest

from llmguard._admission.ratelimit import shared
from llmguard._admission.ratelimit.charge import OPENING, Charge
from llmguard._admission.ratelimit.window import Quota, Window

QUOTAS = (Quota(2, 60.5, False, learn=True, margin=0.5),)


def test_a_clock_minute_counted_late_is_shared_and_carries_ours_in_flight_where_adopted(
) -> None:
    """A window that confirmed a supposed clock minute (no reset: the server may count late)
    shares ``late``; another process adopting it counts its own request admitted at 50 and
    still in flight at the boundary at 60 in the new window (one unit of room, not two).
    Adopted without ``late`` (a boundary the server pointed to) the new window starts empty."""
    learner = Window(QUOTAS)
    learner.shape.late = True
    learner.shape.learn("fixed", "test", 0.0)
    told = shared.learned(learner)
    assert told is not None and told[0] == "fixed" and told[4] is True
    for late in (True, False):
        other = Window(QUOTAS)
        other.add(50.0, 0)  # admitted at 50, never answered
        shared.adopt(other, 55.0, (*told[:4], late, told[5]))
        assert other.shape.kind == "fixed" and other.shape.late is late
        assert other.available(61.0, False) == (1 if late else 2)


def test_same_tells_a_late_window_from_one_counted_at_arrival() -> None:
    """Two shapes differing only in ``late`` do not pace alike (the change is published)."""
    a = ("fixed", 0.0, (0,), "why", True, None)
    assert shared.same(a, a, 60.0) and not shared.same(a, (*a[:4], False, None), 60.0)


def test_a_calibrated_charge_is_adopted_only_by_a_process_that_heard_nothing() -> None:
    """``shared()`` rounds the factor up (never under what the server charges); a process
    still at the opening factor adopts a heard or silent one, and one that heard its own
    readings keeps its own calibration."""
    learner = Charge(10_000)
    assert learner.shared() == f"{OPENING:.2f},opening"
    learner.heard, learner.factor = True, 1.1031
    assert learner.shared() == "1.11,heard"
    fresh = Charge(10_000)
    fresh.adopt(learner.shared())
    assert (fresh.factor, fresh.how) == (pytest.approx(1.11), "heard")
    assert fresh.units(100) == 111
    own = Charge(10_000)
    own.heard, own.factor = True, 1.3
    own.adopt("1.11,heard")
    assert own.factor == 1.3
    quiet = Charge(10_000)
    quiet.adopt("1.00,silent")
    assert (quiet.factor, quiet.how) == (1.0, "silent")
    unheard = Charge(10_000)
    unheard.adopt(f"{OPENING:.2f},opening")
    assert unheard.how == "opening"


def test_a_boundarys_doubt_is_shared_and_paces_the_adopting_window() -> None:
    """A fixed boundary at 0 learned from a reset read on a slow way there (the server's up
    to 0.8 s after it: ``doubt``) is shared with its doubt; a window adopting it counts an
    admission at 60.6 (within the doubt) in the window before too, which is full: no room
    until 60.8, where a boundary adopted without its doubt (the margin, 0.5 s) has room
    there. A narrower doubt shared later (the same boundary) is followed by the counts."""
    learner = Window(QUOTAS)
    learner.shape.learn("fixed", "test", 0.0, 0.8)
    told = shared.learned(learner)
    assert told is not None and told[5] == 0.8
    assert not shared.same(told, (*told[:5], None), 60.0)
    assert not shared.same(told, (*told[:5], 0.7), 60.0)
    assert shared.same(told, (*told[:5], 0.805), 60.0)
    waits = {}
    for doubt in (0.8, None):
        other = Window(QUOTAS)
        for t in (50.0, 51.0):
            other.adjust(t, other.add(t, 0), 0)  # two answered in the window from 0
        shared.adopt(other, 55.0, (*told[:5], doubt))
        assert other.shape.doubt == doubt
        waits[doubt] = other.wait(60.6, 0)
    assert waits[None] == 0.0 and waits[0.8] > 0.0
    shared.adopt(other, 61.0, (*told[:5], 0.2))  # narrowed elsewhere, the same boundary
    assert other.shape.doubt == 0.2 and other.tracks[0].fixed.doubt == 0.2
