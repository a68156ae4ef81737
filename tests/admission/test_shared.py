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
        shared.adopt(other, 55.0, (*told[:4], late))
        assert other.shape.kind == "fixed" and other.shape.late is late
        assert other.available(61.0, False) == (1 if late else 2)


def test_same_tells_a_late_window_from_one_counted_at_arrival() -> None:
    """Two shapes differing only in ``late`` do not pace alike (the change is published)."""
    a = ("fixed", 0.0, (0,), "why", True)
    assert shared.same(a, a, 60.0) and not shared.same(a, (*a[:4], False), 60.0)


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
