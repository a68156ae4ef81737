"""Ours admitted within the margin before a learned fixed window's boundary are counted, once
their answers timed their way there, only in the windows their arrival may lie in
(``_admission/ratelimit/arrived.py``). The README stack in virtual time, the wall clock pinned
to the loop's; the count itself directly."""

from collections import Counter, deque
from types import SimpleNamespace

import pytest

from llmguard._admission.ratelimit import arrived
from llmguard._admission.ratelimit.fixed import FixedCount
from llmguard._admission.ratelimit.log import Entry
from llmguard.testing import FixedWindowServer
from late_start import run

MARGIN = 0.05  #: the least measured margin per minute (``latency.FLOOR``)


@pytest.mark.parametrize("phase", [59.95, 59.97, 59.99])
async def test_a_batch_started_within_the_margin_before_a_minute_uses_the_next(
        phase: float) -> None:
    """The README stack with only ``rpm=30, tpm=40_000`` (30 calls a minute: within its
    ``ConcurrencyLimit(32)``, so all go at once and the slots bound nothing), 3x that at
    once from ``phase``, a fixed clock-minute window with OpenAI's headers, 2 s answers.
    The 30 admitted a few ms before the minute were counted in both (the server may count
    one a margin after admitting it), and no answer to one of ours sent in the next minute
    ever came to say it was empty: the whole minute went unused, 1.97x the ideal. Their
    answers timed their way there (0 s): they arrived before the minute, and it is used."""
    server = FixedWindowServer(rpm=30, tpm=40_000, latency=2.0)
    _, wall, ideal = await run(server, phase, 90, jitter=None, tpm=40_000, rpm=30)
    sent = Counter(int(a.at // 60) for a in server.arrivals)  # per clock minute
    assert wall <= 1.05 * ideal, (wall, ideal, sorted(sent.items()))
    assert server.statistics().rate_limited == 0
    assert sorted(sent.values()) == [30, 30, 30]


def count(entries: list[Entry], recent: deque | None = None) -> FixedCount:
    """A clock minute of 60 requests read from resets (boundaries at :00, margin 0.05 s),
    counting ``entries``."""
    fixed = FixedCount(60, 60.0, MARGIN, 0.0, False, recent, doubt=MARGIN)
    fixed.rebuild(entries[-1].time, entries)
    return fixed


def timed(entry: Entry, way: float) -> Entry:
    entry.way = way  # as ``ServerFeedback.observe_headers`` sets it, before the reading
    return entry


def test_one_timed_before_the_boundary_leaves_the_next_window() -> None:
    """Admitted at :59.97, counted in both minutes (it may arrive up to the margin later);
    its answer says it took 0.01 s to arrive: counted in the minute before only. A refund
    afterwards gives back only there (the next minute's count is not taken below ours)."""
    entries = [Entry(59.97, 1) for _ in range(10)]
    fixed = count(entries)
    assert fixed.available(60.1) == 50
    for entry in entries[:4]:
        assert arrived.timed(fixed, timed(entry, 0.01))
        assert not arrived.timed(fixed, entry)  # once
    assert fixed.available(60.1) == 54
    fixed.adjust(entries[0], 0, 0)  # refunded: nothing more to give back in this minute
    assert fixed.available(60.1) == 54
    fixed.adjust(entries[5], 0, 0)  # not timed: counted in both, given back in both
    assert fixed.available(60.1) == 55


def test_a_way_that_reaches_the_boundary_keeps_it_in_both() -> None:
    """Its way there (0.04 s from :59.97) may have taken it past the boundary: still counted
    in the next minute."""
    entry = Entry(59.97, 1)
    fixed = count([entry])
    assert not arrived.timed(fixed, timed(entry, 0.04))
    assert fixed.available(60.1) == 59


def test_a_recount_keeps_what_the_answers_timed() -> None:
    """A count rebuilt (the margin changed, the boundary narrowed) from entries already timed
    counts them only where they arrived; the others in both."""
    entries = [timed(Entry(59.97, 1), 0.0) for _ in range(6)] + [Entry(59.98, 1)]
    fixed = count(entries)
    assert fixed.available(60.1) == 59
    fixed.rebuild(60.1, entries)
    assert fixed.available(60.1) == 59
    fixed.adjust(entries[0], 0, 0)
    assert fixed.available(60.1) == 59


def test_a_server_that_queues_still_counts_them_in_the_next() -> None:
    """Counted late (ours in flight at the boundary carried in, :mod:`.crossed`): a server
    that queues counts a request when it takes it, however soon it arrived."""
    entries = [Entry(59.97, 1) for _ in range(5)]
    fixed = count(entries, recent=deque(entries))
    assert not arrived.timed(fixed, timed(entries[0], 0.0))
    assert fixed.available(60.1) == 55


def test_a_server_that_queues_counts_them_before_the_boundary_once_their_answers_date_it(
        ) -> None:
    """A server that queues, ours served unqueued in 2 s (:57 answered at :59): of 5 of ours
    admitted at :59.97, one answered at :61.97 was taken by :59.97 (its answer less the least
    the server worked on one of ours) and one refused at :59.98 was counted, if at all, then:
    both count in the minute before only. One answered at :62.5 may have been taken at :60.5
    and one in flight may be taken later yet: still counted in the next minute."""
    served = Entry(57.0, 1)
    served.answered = 59.0
    entries = [Entry(59.97, 1) for _ in range(5)]
    fixed = count([served, *entries], recent=deque([served, *entries]))
    assert fixed.available(60.1) == 55
    assert arrived.timed(fixed, entries[0], now=61.97)
    entries[1].refused = True
    assert arrived.timed(fixed, entries[1], now=59.98)
    assert not arrived.timed(fixed, entries[2], now=62.5)
    assert not arrived.timed(fixed, entries[3])
    assert fixed.available(62.6) == 57
    fixed.adjust(entries[0], 0, 0)  # refunded: nothing more to give back in the next minute
    assert fixed.available(62.6) == 57


def carried_over(n: int) -> tuple[list[Entry], FixedCount, list[SimpleNamespace]]:
    """A server that queues, ours served unqueued in 2 s (:40 answered at :42): ``n`` sent at
    :44 still in flight at the minute, carried into it (the count, its track)."""
    served = Entry(40.0, 1)
    served.answered = 42.0
    entries = [Entry(44.0, 1) for _ in range(n)]
    fixed = count([served, *entries], recent=deque([served, *entries]))
    assert fixed.available(60.1) == 60 - n
    return entries, fixed, [SimpleNamespace(fixed=fixed)]


def test_ours_carried_over_a_boundary_leave_it_once_their_answers_date_their_take_before(
        ) -> None:
    """4 of ours carried over (:func:`carried_over`: the server may take them after it). One
    answered at :60.001 and one read now at :61 were taken by :59 at the latest (less the
    least it worked on one of ours): counted before it only. One answered at :62.5 may have
    been taken at :60.5, one in flight later yet: still carried."""
    entries, fixed, tracks = carried_over(4)
    entries[0].answered, entries[1].answered = 60.001, 62.5
    for entry, now in ((entries[0], 60.001), (entries[2], 61.0), (entries[1], 62.5)):
        arrived.taken(tracks, entry, now)
    assert fixed.available(62.5) == 58
    arrived.taken(tracks, entries[0], 62.6)  # once
    assert fixed.available(62.6) == 58
    assert not arrived.timed(fixed, entries[0], now=62.6)


@pytest.mark.parametrize("counted, left", [(12, 50), (10, 50), (11, 50), (9, 51)])
def test_a_count_of_answers_gives_back_ours_taken_before_the_boundary(counted: int,
                                                                     left: int) -> None:
    """As above, the 2 carried over let go, then 10 admitted at :60.05: a server counting
    answers counts the 2 in the new minute (12): read as admitted there, the minute would
    hold 2 fewer. Given back as far as the count exceeds ours in the window (10): a server
    counting admissions (10) gives nothing back; the count still bounds ours (9)."""
    carried, fixed, tracks = carried_over(2)
    for entry, now in zip(carried, (60.001, 60.003)):
        arrived.taken(tracks, entry, now)
        entry.answered = now
    for _ in range(10):
        entry = Entry(60.05, 1)
        fixed.recent.append(entry)
        fixed.add(60.05, entry)
    assert fixed.available(60.1) == 50
    assert arrived.vouched(tracks, 62.06, 60.05, 60 - counted, 60) == left
    assert fixed.available(62.06) == left
