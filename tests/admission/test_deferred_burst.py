"""A 429 to one of a burst, its lesson waiting for the rest of the burst's answers
(:mod:`llmguard._admission.ratelimit.deferred`), read directly."""

from llmguard._admission.ratelimit.deferred import KEY
from llmguard._admission.ratelimit.refusal import learn_limit
from llmguard._admission.ratelimit.window import Quota, Window


def _refused_in_a_burst(sure: bool) -> tuple[Window, list]:
    """60 a minute: 28 of ours sent at 70 (answered at 72), 32 sent together at 100; the 24th
    of those refused at 100.01 (8 sent with it after it still in flight), asking for a pause
    of a window when ``sure``, else 2 s."""
    window = Window((Quota(60, 60.0, False, learn=True),))
    for entry in [window.add(70.0, 0) for _ in range(28)]:
        window.adjust(72.0, entry, 0)
    burst = [window.add(100.0, 0) for _ in range(32)]
    ticket = burst[23]
    ticket.refused = True  # as ``learn_refusal.refused`` marks it first
    learn_limit(window, 100.01, ticket, pause=(100.01 + (60.0 if sure else 2.0), False),
                sure=sure)
    return window, burst


def test_a_429_inside_a_burst_teaches_the_limit_once_the_burst_is_served() -> None:
    """Read by admission, 51 seen: nothing learned at the 429. All 8 after it served, they
    reached the server before it: 59 seen, the server admits 59."""
    window, burst = _refused_in_a_burst(sure=True)
    track = window.tracks[0]
    assert track.limit == 60
    for entry in burst[24:-1]:
        window.adjust(102.0, entry, 0)
    assert track.limit == 60  # one still in flight: its place not known yet
    window.adjust(102.0, burst[-1], 0)
    assert track.limit == 59


def test_a_429_inside_a_burst_whose_others_were_refunded_teaches_nothing() -> None:
    """The 8 after it refunded (never reached the server): 51 seen, not near the quota."""
    window, burst = _refused_in_a_burst(sure=True)
    for entry in burst[24:]:
        window.adjust(100.02, entry, 0, live=0)
    assert window.tracks[0].limit == 60


def test_a_silent_servers_short_pause_waits_for_no_burst() -> None:
    """A 2 s pause from a server that says nothing (a stray 429's, as often as not) keeps no
    lesson for its burst (read so, stray ones taught "the server admits 54"), and the burst
    served after it teaches nothing."""
    window, burst = _refused_in_a_burst(sure=False)
    track = window.tracks[0]
    assert KEY not in track.repeats
    for entry in burst[24:]:
        window.adjust(102.0, entry, 0)
    assert track.limit == 60
