"""A server whose ``remaining`` counts answers (LiteLLM's proxy) answering a whole burst after
the clock minute (:mod:`llmguard._admission.ratelimit.answers`, :mod:`.fixed`), read directly;
the README stack against LiteLLM's clock-minute proxy in virtual time."""

from types import SimpleNamespace

import pytest

from llmguard._admission.ratelimit.answers import held, restarted
from llmguard._admission.ratelimit.fixed import FixedCount
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.refusal import before
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import ProxyWindowServer
from late_start import run


class _Track:
    """What :func:`restarted` reads of a track: its window and ours admitted lately."""

    window = 60.0

    def __init__(self, recent: list[Entry]) -> None:
        self.recent = recent

    @staticmethod
    def weight(entry: Entry) -> int:
        return entry.live


def _burst() -> tuple[_Track, Entry]:
    """176 of ours sent at 22 and answered at 44, 1,023 sent at 60 (the first answered at 82)."""
    early = [Entry(22.0, 0, seq=i) for i in range(176)]
    for entry in early:
        entry.answered = 44.0
    burst = [Entry(60.0, 0, seq=176 + i) for i in range(1023)]
    return _Track(early + burst), burst[0]


def test_a_count_back_up_after_the_minute_in_an_answer_to_one_sent_before_shows_it() -> None:
    """The answer at 82 to one of ours sent at 60 reads 1199 of 1200: no window counting ours
    as they arrive (the 176 sent at 22 with it, in the minute from 20 and in any sliding
    window) nor one sliding over answers (the 176 answered at 44) reports more than 1023: the
    server counted afresh at 80, as it answered; nor a bucket empty at 22 (760 refilled by
    60). Read 1000, it fits them: undecided; and no answer to one sent after the minute is
    read so (the first answer after it decides there)."""
    read = {False: [22.0, 0, 44.0, 1200, 0, 0]}  # the 176 sent at 22 read 0 left (:mod:`.reading`)
    window = SimpleNamespace(shape=SimpleNamespace(others=None),
                             readings=SimpleNamespace(groups=read))
    track, ticket = _burst()
    assert restarted(window, track, ticket, 1199, 1200, 80.0, 82.0, 0.1) is not None
    assert restarted(window, track, ticket, 1000, 1200, 80.0, 82.0, 0.1) is None
    assert restarted(window, track, ticket, 1199, 1200, 50.0, 82.0, 0.1) is None
    read[False][1] = 500  # a bucket with 500 left at 22 holds 1,260 by 60: undecided
    assert restarted(window, track, ticket, 1199, 1200, 80.0, 82.0, 0.1) is None


def test_ours_sent_before_a_refusal_are_not_carried_into_the_next_window() -> None:
    """A server counting late (``recent`` given) refused the third of ours at 55 (limit 3: its
    count of the window was full then, ours before it counted there; a proxy takes its queue
    in order): the two before it, still in flight at 60, are not carried into the window from
    60, which has its whole quota. Without the refusal both are carried (room for one)."""
    for refusal in (True, False):
        recent: list[Entry] = []
        fixed = FixedCount(3, 60.0, 0.5, 0.0, tokens=False, recent=recent)
        for seq, t in enumerate((40.0, 50.0, 55.0)):
            entry = Entry(t, 0, seq=seq)
            recent.append(entry)
            fixed.add(t, entry)
        recent[2].refused, recent[2].answered = refusal, 55.1
        assert fixed.available(61.0) == (3 if refusal else 1)


def test_a_count_ours_explain_is_held_until_our_oldest_leaves_not_a_window() -> None:
    """Ten of ours sent at 0, answered at 20, and five at 20 (their answers read 0 of 15): ours
    explain the count, so the 0 holds only until the oldest of ours leaves the log (60), not a
    window from the ticket (80). A count above ours (another client's) holds the whole window."""
    window = Window((Quota(15, 60.0, False, learn=True),))
    tracks = list(window.tracks)
    early = [window.add(0.0, 0) for _ in range(10)]
    for entry in early:
        entry.answered = 20.0
    later = [window.add(20.0, 0) for _ in range(5)]
    assert held(window, tracks, 0, 15, later[-1], 42.0, 80.0) == (60.0, None)
    assert held(window, tracks, 0, 20, later[-1], 42.0, 80.0) == (80.0, None)  # 20 counted, 15 ours


def test_a_count_ours_answered_explain_is_held_until_each_is_out_counted_from_its_answer() -> None:
    """Six of ours sent at 0 to a server with 2 workers (2 s each): answered at 2, 2, 4, 4, 6
    and 6, their answers reading 0 of 6. Room comes back as each leaves the count, counted at
    the latest its answer allows (its answer less the shortest round trip, 2 s: 0, 0, 2, 2, 4
    and 4): the log lets all six go at 60, so the cap holds until the last is out (64), not
    until the oldest sent leaves (60), and gives back their room as they leave it: two at 60,
    two at 62. The same six answered together 6 s late (every round trip 6 s: counted as they
    arrived, written late) leave at 60, all at once."""
    for answers, out, steps in (((2.0, 2.0, 4.0, 4.0, 6.0, 6.0), 64.0, [[60.0, 2], [62.0, 2]]),
                                ((6.0,) * 6, 60.0, None)):
        window = Window((Quota(6, 60.0, False, learn=True),))
        tracks = list(window.tracks)
        sent = [window.add(0.0, 0) for _ in range(6)]
        for entry, answered in zip(sent, answers):
            entry.answered = answered
        until, stairs = held(window, tracks, 0, 6, sent[-1], 6.0, 66.0)
        assert (until, stairs and stairs.steps) == (out, steps)


def _capped_by_a_queueing_proxy() -> Window:
    """Six of ours sent at 0 to a proxy with 2 workers (2 s each), answered at 2, 2, 4, 4, 6
    and 6, the last reading 0 of 6: the window with the cap that reading sets."""
    window = Window((Quota(6, 60.0, False, learn=True),))
    sent = [window.add(0.0, 0) for _ in range(6)]
    for entry, answered in zip(sent, (2.0, 2.0, 4.0, 4.0, 6.0, 6.0)):
        entry.answered = answered
    stairs = held(window, list(window.tracks), 0, 6, sent[-1], 6.0, 66.0)[1]
    window.caps[False] = [0, 64.0, window.issued, sent[-1].seq, 0, stairs]  # as ``Window.cap``
    return window


def test_a_cap_gives_room_back_as_ours_leave_the_count_of_a_proxy_that_queues() -> None:
    """The six of the test above (2 workers, 2 s each, the count's 0 read as the last was
    answered): the cap of 0 holds until 64, and gives back the room of the two taken at 0 at
    60, of the two taken at 2 at 62, though the log lets all six go at 60. A 429 to the last
    admitted on that room shows the server admits one fewer than it says: by its word it had
    counted 5 before it (read from our log, which let the six go: 3, and nothing learned)."""
    window = _capped_by_a_queueing_proxy()
    assert window.wait(59.0, 0) + 59.0 == pytest.approx(60.0, abs=0.01)
    assert window.take(60.0, 0) is not None and window.take(60.0, 0) is not None
    assert window.take(60.0, 0) is None
    assert window.wait(60.5, 0) + 60.5 == pytest.approx(62.0, abs=0.01)
    assert window.take(62.0, 0) is not None
    ticket = window.take(62.0, 0)
    assert ticket is not None and window.take(62.0, 0) is None
    assert before(window, window.tracks[0], 62.1, ticket) == 5


def test_a_shuffled_waves_oldest_read_last_skips_none_of_the_counts_oldest() -> None:
    """Four of ours sent at 0 (answered 2, 2, 4, 4), then two sent together at 10, answered at
    12 out of order: the older one heard last reads 1 of 6 (it counted the four and itself,
    not the other one of its wave). The cap its bound sets (the other subtracted as sent after
    it) gives back the room of both answered at 2 at 60, not one: the count's one beyond ours
    before the wave is the other one of the wave, not the oldest."""
    window = Window((Quota(6, 60.0, False, learn=True),))
    sent = [window.add(at, 0) for at in (0.0, 0.0, 0.0, 0.0, 10.0, 10.0)]
    for entry, answered in zip(sent, (2.0, 2.0, 4.0, 4.0, 12.0, 12.0)):
        entry.answered = answered
    until, stairs = held(window, list(window.tracks), 1, 6, sent[4], 12.0, 70.0)
    assert (until, stairs and stairs.steps) == (62.0, [[60.0, 2]])


def test_a_429_to_one_of_a_pair_sent_together_on_a_caps_room_reads_the_caps_word() -> None:
    """The six of the queueing proxy above, the two sent together at 62 on the cap's room: the
    first admitted refused while the other is in flight. The count that refused it had the
    other (admitted: it came first) or refuses it too: by its word it had counted 5 before it
    (read from our log, which let the six go: 3)."""
    window = _capped_by_a_queueing_proxy()
    assert window.take(60.0, 0) is not None and window.take(60.0, 0) is not None
    refused, other = window.take(62.0, 0), window.take(62.0, 0)
    assert refused is not None and other is not None
    assert before(window, window.tracks[0], 62.1, refused) == 5


def test_ours_answered_at_the_instant_of_the_answer_showing_the_minute_are_let_go() -> None:
    """A clock minute counted late (ours in flight at :00 carried into it): 32 sent at :58,
    answered at :00.000, all in the same instant (2 s each); the answer that shows the new
    minute comes after 24 of them there. Those 24 were made before it, as they were read:
    counted before the minute, no longer carried (kept, the minute held 32 more than the
    server counted, and the README stack from :58 waited for the next: 1.48x); the rest, not
    answered yet, stay carried."""
    recent = [Entry(58.0, 0, seq=i) for i in range(32)]
    fixed = FixedCount(60, 60.0, 0.05, 0.0, tokens=False, recent=recent, on_clock=True)
    fixed.rebuild(58.0, recent)
    assert fixed.available(60.1) == 60 - 32  # in flight at the boundary: carried in
    for entry in recent[:24]:
        entry.answered = 60.0
    fixed.flipped(60.0)
    assert fixed.available(60.1) == 60 - 8


async def test_a_clock_minute_proxy_answering_the_first_burst_at_the_minute() -> None:
    """The README stack (``rpm=60``, ``ConcurrencyLimit(32)``) 3x the quota at once from :58
    against LiteLLM's clock-minute proxy (``rpm - 1`` a minute, ``remaining`` without a reset),
    answering in 2.01 s: the 32 sent at :58 are answered at :00.01, all in one instant of
    virtual time, and the 28 queued below go then (within the clocks' skew after the minute:
    no answer to them vouches for the new minute's count). The answers read before the one
    that showed the new minute, in the same instant, were kept carried into it as in flight
    (``FixedCount.flipped`` let go of those answered before the reading's instant only): the
    minute held 32 requests the proxy had counted in the last, only the 28 went, and the rest
    of its quota waited for the next (1.48x the ideal). Within 1.05x, one 429 (the proxy's
    ``rpm - 1``, learned from it). In real time answers are never simultaneous: this is the
    bench's virtual time, where every answer takes the same 2 s."""
    server = ProxyWindowServer(rpm=60, tpm=40_000, latency=2.01)
    _, wall, ideal = await run(server, 58.0, 180, jitter=None, tpm=40_000)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.05 * ideal, (wall, ideal)
