"""A server whose ``remaining`` counts answers (LiteLLM's proxy) answering a whole burst after
the clock minute (:mod:`llmguard._admission.ratelimit.answers`, :mod:`.fixed`), read directly."""

from types import SimpleNamespace

from llmguard._admission.ratelimit.answers import held, restarted
from llmguard._admission.ratelimit.fixed import FixedCount
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.window import Quota, Window


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
    assert held(window, tracks, 0, 15, later[-1], 42.0, 80.0) == 60.0
    assert held(window, tracks, 0, 20, later[-1], 42.0, 80.0) == 80.0  # 20 counted, 15 ours


def test_a_count_ours_answered_explain_is_held_until_each_is_out_counted_from_its_answer() -> None:
    """Six of ours sent at 0 to a server with 2 workers (2 s each): answered at 2, 2, 4, 4, 6
    and 6, their answers reading 0 of 6. Room comes back as each leaves the count, counted at
    the latest its answer allows (its answer less the shortest round trip, 2 s: 0, 0, 2, 2, 4
    and 4): the log lets all six go at 60, so the cap holds until the last is out (64), not
    until the oldest sent leaves (60). The same six answered together 6 s late (every round
    trip 6 s: counted as they arrived, written late) leave at 60."""
    for answers, out in (((2.0, 2.0, 4.0, 4.0, 6.0, 6.0), 64.0), ((6.0,) * 6, 60.0)):
        window = Window((Quota(6, 60.0, False, learn=True),))
        tracks = list(window.tracks)
        sent = [window.add(0.0, 0) for _ in range(6)]
        for entry, answered in zip(sent, answers):
            entry.answered = answered
        assert held(window, tracks, 0, 6, sent[-1], 6.0, 66.0) == out
