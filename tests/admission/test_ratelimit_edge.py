"""RateLimit at a window's edge (issue #35 item 12): a call with no room never gets a wait of 0.0.

``fits`` expires an entry once ``time <= now - span``, while the wait was ``time + span - now``:
on the loop's microsecond clock the two disagree at some instants (98.106431 + 60 - 158.106431
is 0.0, yet 98.106431 <= 158.106431 - 60 is false), and the waiting line re-checked at the same
instant for ever (a busy loop in real time; under a virtual clock the call was never admitted).
"""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.ratelimit.backend import MemoryBackend
from llmguard._admission.ratelimit.window import Quota, Window

#: Loop times (microsecond ticks, as looptime's clock and any float clock give them) at which
#: ``t + 60 - (t + 60 s)`` rounds to 0.0 while the entry at ``t`` is still inside the window.
EDGE = 98.106431


class CountingBackend(MemoryBackend):
    """The in-memory backend, counting the waiting line's checks (each a wakeup of its driver)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def reserve(self, key, quotas, tokens):
        self.checks += 1
        if self.checks > 100:  # a spinning line: fail the call instead of hanging the test
            raise AssertionError("the waiting line re-checked 100 times: it is spinning")
        return await super().reserve(key, quotas, tokens)


def test_the_edge_instant_really_disagrees() -> None:
    """The instants used below do hit the rounding (else the next test would prove nothing)."""
    now = (round(EDGE * 1e6) + 60 * 10**6) / 1e6
    assert EDGE + 60.0 - now <= 0.0 and not EDGE <= now - 60.0


@pytest.mark.looptime(start=0)
async def test_a_call_at_the_window_edge_is_admitted_without_spinning() -> None:
    """rpm=1: a call arriving exactly one window after the admission it waits for (an instant
    where the rounding says 0.0) is admitted within a millisecond, after a handful of checks."""
    backend = CountingBackend()
    limit = lg.RateLimit(rpm=1, backend=backend, refill="window", margin=0)
    sent: list[float] = []

    async def send() -> None:
        sent.append(asyncio.get_running_loop().time())

    guarded = lg.guard(limit)(send)
    await asyncio.sleep(EDGE)
    await guarded()
    await asyncio.sleep(60.0)
    await guarded()
    assert len(sent) == 2
    assert sent[1] - sent[0] >= 60.0
    assert sent[1] - sent[0] < 60.01
    assert backend.checks <= 3, backend.checks


@settings(max_examples=300, deadline=None)
@given(ticks=st.integers(0, 10**11), span=st.sampled_from([1.0, 60.0, 60.001, 60.1, 61.0]),
       offset=st.integers(-3, 3), limit=st.integers(1, 3))
def test_no_room_always_means_a_positive_wait(ticks: int, span: float, offset: int,
                                              limit: int) -> None:
    """Invariant: whenever a request does not fit, the wait is strictly positive, and after
    that wait it fits (a wait of 0.0 with no room is a busy loop)."""
    t = ticks / 1e6
    window = Window((Quota(limit, span, False),))
    for _ in range(limit):
        assert window.take(t, 1) is not None
    now = (ticks + round(span * 1e6) + offset) / 1e6
    if window.take(now, 1) is None:
        wait = window.wait(now, 1)
        assert wait > 0.0
        assert window.take(now + wait, 1) is not None
