"""When admission resumes at a fixed window's boundary: the skew past it (a clock minute is
exact but for the clocks' skew, whatever the way to the server takes; a boundary read from a
reset is off by up to the margin), and a 429's retry-after against it (never earlier than the
server allows). Everything takes ``now``: tested directly."""

import pytest

from llmguard._admission.ratelimit import learn
from llmguard._admission.ratelimit.fixed import CLOCK_SKEW, FixedCount, skew
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.window import SLACK, Quota, Window

MARGIN = 3.0  #: a measured margin of seconds: LiteLLM's proxy queueing a burst
SKEW = CLOCK_SKEW  #: per minute of window


def window(limit: int = 5) -> Window:
    return Window((Quota(limit, 60.0 + MARGIN, False, learn=True, margin=MARGIN),))


def fill(w: Window, times: list[float]) -> list[Entry]:
    """Admit one request at each of ``times``, each answered a moment later (none in flight
    at the boundary)."""
    entries = [w.take(t, 0) for t in times]
    assert all(e is not None for e in entries)
    for entry in entries:
        w.adjust(times[-1] + 0.1, entry, 0)
    return entries


def learned_clock_minute(w: Window, now: float) -> None:
    """``w`` learned a fixed window on the wall clock's minute (epoch 0), as a server that
    gives no reset teaches it (:meth:`.shape.Shape.confirm`)."""
    w.shape.learn("fixed", "a clock minute (test)", 0.0)
    w.shape.late = True
    learn.become_fixed(w, now)


def test_the_skew_of_a_clock_minute_is_the_clocks_not_the_margin() -> None:
    """On the wall clock's minute a request admitted after the boundary reaches the server
    after it, however long the way: the next window's burst goes the clocks' skew past it;
    one admitted within the margin before it may be counted after it (both windows). A
    boundary read from a reset (timed from our admission, counted from the arrival) is off by
    up to the margin: the burst goes the margin past it. ``margin=0`` counts at admission."""
    assert skew(MARGIN, 60.0, on_clock=True) == SKEW
    assert skew(MARGIN, 60.0, on_clock=False) == MARGIN
    assert skew(0.0, 60.0, on_clock=True) == 0.0
    clock = FixedCount(2, 60.0, MARGIN, 0.0, tokens=False, on_clock=True)
    read = FixedCount(2, 60.0, MARGIN, 0.0, tokens=False)
    for fixed in (clock, read):
        for t in (40.0, 58.0):
            fixed.add(t, Entry(t, 0))
    assert clock.wait(59.0, 1) == pytest.approx(1.0 + SKEW, abs=1e-5)
    assert read.wait(59.0, 1) == pytest.approx(1.0 + MARGIN, abs=1e-5)
    assert not clock.fits(60.0 + SKEW / 2, 0)  # within the skew: the old window too
    assert clock.fits(60.0 + SKEW + 1e-6, 0) and clock.available(61.0) == 1  # 58 counts in both
    assert not read.fits(62.0, 0)


def test_a_long_retry_after_on_a_clock_minute_resumes_at_the_boundary() -> None:
    """LiteLLM's ``retry-after: 60`` at :44 says only "within a window": the learned clock
    minute starts afresh at :00, the skew past it (not the margin, nor :44 of the next)."""
    w = window()
    learned_clock_minute(w, 40.0)
    entries = fill(w, [40.0, 41.0, 42.0, 43.0, 44.0])
    w.refused(44.5, entries[-1], 60.0, wall=44.5)
    assert w.wait(44.5, 0) == pytest.approx(60.0 + SKEW - 44.5 + SLACK, abs=1e-5)
    assert w.take(60.0, 0) is None
    assert w.take(60.0 + SKEW + 1e-5, 0) is not None


def test_a_short_retry_after_past_the_boundary_wins_over_the_boundary() -> None:
    """A 429 at :58 asking for 5 s (the server's own reckoning: shorter than a window) on a
    learned clock minute: nothing goes at the boundary, the first at :03."""
    w = window()
    learned_clock_minute(w, 40.0)
    entries = fill(w, [40.0, 41.0, 42.0, 43.0, 58.0])
    w.refused(58.0, entries[-1], 5.0, wall=58.0)
    assert w.wait(58.0, 0) >= 5.0
    assert w.take(60.0 + SKEW + 1e-5, 0) is None and w.take(62.9, 0) is None
    assert w.take(63.0 + 1e-5, 0) is not None


def supposed_clock_minute(w: Window) -> list[Entry]:
    """Four admitted from :40 and one refused at :44 by a server that reports ``remaining``
    without a reset: the minute's boundary (60) supposed, to be probed."""
    entries = fill(w, [40.0, 41.0, 42.0, 43.0, 44.0])
    w.cap(40.5, False, 4, None, entries[0], 5, wall=40.5)
    assert w.shape.candidate == 60.0
    return entries


@pytest.mark.parametrize(("seconds", "probe_at"), [(60.0, 60.0 + SKEW), (26.0, 70.0)])
def test_a_probe_goes_at_the_boundary_but_never_before_a_short_retry_after_ends(
        seconds: float, probe_at: float) -> None:
    """A supposed clock minute is probed the skew past its boundary, with a margin of seconds
    (nothing of ours can arrive before the boundary), when the 429 said "within a window"
    (60 s); one asking for 26 s at :44 (to :70) holds the probe until then, and a fixed
    window learned meanwhile keeps that pause."""
    w = window()
    entries = supposed_clock_minute(w)
    w.refused(44.0, entries[-1], seconds, wall=44.0)
    assert w.wait(44.0, 0) == pytest.approx(probe_at - 44.0 + SLACK, abs=1e-5)
    assert w.take(probe_at - 1e-3, 0) is None
    probe = w.take(probe_at + 1e-5, 0)
    assert probe is not None and probe is w.shape.probe
    w.shape.confirm(True, "5 of 5 requests remaining (test)")
    learn.become_fixed(w, probe_at + 0.5)
    assert w.paused_until <= probe_at + 0.5 or w.paused_until == 44.0 + seconds
    assert w.take(probe_at + 0.6, 0) is not None
