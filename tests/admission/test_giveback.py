"""Learning whether a server gives unused output back (``ratelimit/giveback.py``), read from
its output ``remaining`` readings against a modelled server bucket. Pure: ``now`` is passed."""

from __future__ import annotations

import heapq

from llmguard._admission.ratelimit.giveback import GiveBack

LIMIT, WINDOW, SPREAD = 4_000, 60.0, 0.5
RATE = LIMIT / WINDOW
MAX_TOKENS, USED = 200, 64


class Server:
    """An output bucket: charged ``max_tokens`` at arrival, given the unused part back at the
    end of the answer when ``gives_back``."""

    def __init__(self, gives_back: bool) -> None:
        self.gives_back, self.level, self.at = gives_back, float(LIMIT), 0.0

    def _refill(self, now: float) -> None:
        self.level, self.at = min(LIMIT, self.level + RATE * (now - self.at)), now

    def arrive(self, now: float, tokens: int = MAX_TOKENS) -> None:
        self._refill(now)
        self.level -= tokens

    def end(self, now: float, unused: int = MAX_TOKENS - USED) -> int:
        self._refill(now)
        if self.gives_back:
            self.level += unused
        return int(self.level)


def run(gives_back: bool, *, latency: float = 0.3, hear: bool = True, answers: int = 60,
        every: float | None = None) -> tuple[GiveBack, list[int]]:
    """A full burst of 20 calls sent 0.05 s apart, then one every ``every`` s (what the server
    sustains: 3 s when it keeps max_tokens, 1 s when it gives back), each reaching the server
    ``latency`` s after it was sent and answered 2 s after that."""
    every = every or (1.0 if gives_back else 3.0)
    back, server, reconciled = GiveBack(SPREAD, WINDOW), Server(gives_back), []
    events: list[tuple[float, int]] = []  # (when, 0: ours sent, 1: arrives, 2: answer ends)
    for i in range(20):
        heapq.heappush(events, (i * 0.05, 0))
    for k in range(answers - 20):
        heapq.heappush(events, (3.0 + k * every, 0))
    ended = 0
    while ended < answers:
        now, kind = heapq.heappop(events)
        if kind == 0:
            back.admitted(now, MAX_TOKENS)
            heapq.heappush(events, (now + latency, 1))
        elif kind == 1:
            server.arrive(now)
            heapq.heappush(events, (now + 2.0, 2))
        else:
            remaining = server.end(now)
            ended += 1
            back.ended(now, USED, MAX_TOKENS, reconciled.append)
            if hear:
                back.read(now, remaining, LIMIT)
    return back, reconciled


def test_a_server_that_gives_back_is_seen_doing_it_and_the_held_answers_are_given_back() -> None:
    back, reconciled = run(True)
    assert back.verdict is True, back.describe()
    assert reconciled.count(USED) == len(reconciled) == 60  # none kept: the held ones too
    assert "unused output given back (the server does)" in back.describe()


def test_a_server_that_keeps_max_tokens_is_seen_keeping_it() -> None:
    """Every answer keeps its charge but the first: it ends before any reading is heard (here,
    as through the SDK, its own reading follows it), so its unused output is given back as
    the test of the server (its reading decides first here)."""
    back, reconciled = run(False)
    assert back.verdict is False, back.describe()
    assert reconciled == [USED] + [MAX_TOKENS] * 59
    assert "max_tokens kept charged (the server does not" in back.describe()


def test_ours_on_the_way_never_look_like_a_give_back() -> None:
    """Up to a whole spread of send latency: the server's readings miss ours sent just before,
    so it looks fuller than ours counted; that must not read as giving back."""
    for latency in (0.0, 0.2, 0.45):
        back, reconciled = run(False, latency=latency)
        assert back.verdict is not True, (latency, back.describe())
        assert USED not in reconciled[1:]


def test_without_any_reading_one_answer_at_a_time_tests_the_server() -> None:
    """A client that reads no header: the answers' unused output is held back but for one
    answer's, given back as a test; the others wait for its outcome."""
    back, reconciled = run(False, hear=False, answers=5)
    assert back.verdict is None and back.credit == MAX_TOKENS - USED
    assert reconciled == [USED]  # the test's credit; four held
    assert "one answer's unused output at a time" in back.describe()


def deaf_with_credit() -> tuple[GiveBack, list[int]]:
    """Three answers ended with nothing heard: the first one's unused output given back."""
    back, reconciled = GiveBack(SPREAD, WINDOW), []
    for i in range(3):
        back.admitted(0.0, MAX_TOKENS, object(), lambda: LIMIT)
    for i in range(3):
        back.ended(2.0, USED, MAX_TOKENS, reconciled.append, object())
    assert reconciled == [USED] and back.credit == MAX_TOKENS - USED
    return back, reconciled


def test_a_request_admitted_only_thanks_to_the_credit_and_served_shows_a_give_back() -> None:
    """A request that fits without the credit tests nothing; the next one that needs it is
    the test: served, the server gives back, and the held answers are given back too."""
    back, reconciled = deaf_with_credit()
    back.admitted(3.0, MAX_TOKENS, object(), lambda: MAX_TOKENS + back.credit)
    assert back.probe is None  # it fit without the credit
    test = object()
    back.admitted(3.5, MAX_TOKENS, test, lambda: MAX_TOKENS)
    assert back.probe is test
    back.ended(5.5, USED, MAX_TOKENS, reconciled.append, test)
    assert back.verdict is True and reconciled == [USED] * 4
    assert "admitted only thanks to 136 unused output given back was served" in back.describe()


def test_the_test_refused_shows_max_tokens_kept_and_charges_the_credit_again() -> None:
    """Refused (429), the test shows the server keeps max_tokens charged: the credit is to be
    charged again, the held answers keep their charge; a 429 of another request, or a test
    never sent, teaches nothing."""
    back, reconciled = deaf_with_credit()
    assert back.refused(object()) == 0
    test = object()
    back.admitted(3.0, MAX_TOKENS, test, lambda: MAX_TOKENS)
    back.uncharged(MAX_TOKENS, test)  # never sent: tests nothing, the next one will
    assert back.probe is None and back.refused(test) == 0
    back.admitted(3.5, MAX_TOKENS, test, lambda: MAX_TOKENS)
    assert back.refused(test) == MAX_TOKENS - USED
    assert back.verdict is False and reconciled == [USED, MAX_TOKENS, MAX_TOKENS]
    assert "max_tokens kept charged (the server does not" in back.describe()


def test_held_answers_keep_their_charge_after_the_horizon_once_a_reading_was_heard() -> None:
    back, reconciled = GiveBack(SPREAD, WINDOW), []
    back.admitted(0.0, MAX_TOKENS)
    back.read(1.0, LIMIT - MAX_TOKENS, LIMIT)  # heard, near full: nothing judged
    back.ended(2.0, USED, MAX_TOKENS, reconciled.append)
    assert reconciled == []  # held: no verdict yet
    back.expire(2.0 + WINDOW / 6 + 0.1)
    assert reconciled == [MAX_TOKENS]


def test_a_refused_request_is_not_counted_as_charged() -> None:
    """Refused (or never sent), a reservation is uncharged: otherwise the server would look
    fuller than our count by it, as if it gave back."""
    back = GiveBack(SPREAD, WINDOW)
    back.admitted(0.0, MAX_TOKENS)
    back.uncharged(MAX_TOKENS)
    assert back.issued == 0


def test_readings_near_full_start_the_span_over() -> None:
    """A bucket at its size wastes refill: a span over it would under-read a give-back, so it
    starts at the reading instead of judging."""
    back, reconciled = GiveBack(SPREAD, WINDOW), []
    for i in range(10):
        back.ended(float(i), USED, MAX_TOKENS, reconciled.append)
        back.read(float(i), LIMIT, LIMIT)
    assert back.verdict is None and back.votes == 0


def test_the_give_back_state_of_idle_partitions_is_forgotten() -> None:
    """A layer with ``key=`` per user keeps one GiveBack per partition: one with nothing
    admitted for a window and no answer held is swept once the map has doubled (as idle
    windows are), so memory stays bounded by the partitions active in the last window; an
    answer held back is settled first (past the horizon, keeping its charge)."""
    from llmguard._admission.ratelimit.split_giveback import GiveBacks
    from llmguard._admission.ratelimit.window import Quota

    quotas = (Quota(LIMIT, WINDOW + SPREAD, True, learn=True, margin=SPREAD, part="output"),)
    backs, reconciled = GiveBacks(), []
    holder = backs.track("holder", quotas, 0.0)
    holder.admitted(0.0, MAX_TOKENS)
    holder.read(0.5, LIMIT - MAX_TOKENS, LIMIT)  # heard: its answers are held for a verdict
    holder.ended(1.0, USED, MAX_TOKENS, reconciled.append)
    for user in range(1_000):
        now = float(user)
        backs.track(user, quotas, now).admitted(now, MAX_TOKENS)
        assert len(backs) <= 2 * (WINDOW + 2) + 1
    assert 999 in backs and 0 not in backs
    assert "holder" not in backs and reconciled == [MAX_TOKENS]


def test_a_test_answered_without_usage_tests_nothing() -> None:
    """An answer that reports no usage (its reservation kept as made: an error after it was
    sent) says nothing about the give-back: the next request admitted on the credit tests."""
    back, reconciled = deaf_with_credit()
    test = object()
    back.admitted(3.0, MAX_TOKENS, test, lambda: MAX_TOKENS)
    back.ended(5.0, MAX_TOKENS, MAX_TOKENS, reconciled.append, test)
    assert back.verdict is None and back.probe is None and back.credit == MAX_TOKENS - USED


def test_a_verdict_adopted_from_another_process_settles_the_held_and_ends_the_test() -> None:
    """Another process's verdict (shared through Redis) is taken as this one's: the answers
    held are settled by it, the test under way ends, and a credit given back to a server now
    known to keep max_tokens is to be charged again; the same verdict again changes nothing."""
    for verdict in (True, False):
        back, reconciled = deaf_with_credit()
        again = back.adopt(verdict, "the server's output remaining rose")
        assert back.verdict is verdict and back.told is verdict
        assert again == (0 if verdict else MAX_TOKENS - USED)
        assert back.why == "learned by another process: the server's output remaining rose"
        assert back.credit == 0 and back.probe is None and not back.held
        assert reconciled == [USED] + [USED if verdict else MAX_TOKENS] * 2
        assert back.adopt(verdict, "again") == 0 and back.why.endswith("remaining rose")


class Sent:
    """An output reservation admitted at ``time`` (loop time; the wall clock's here)."""

    def __init__(self, time: float) -> None:
        self.time = time


def burst_before_the_minute(limit: int = 3_000) -> tuple[GiveBack, list[int], Sent]:
    """15 of 200 at :58 (a 3,000 quota full), answered at :00 with nothing heard; the test
    admitted at :00 thanks to one answer's unused output is served. A window counting per
    clock minute had room for it (nothing of ours counted there yet): the give-back is
    provisional, and once ours in the minute fill such a window, the one request beyond it
    goes alone (the others wait for its outcome, or the next minute)."""
    back, reconciled = GiveBack(SPREAD, WINDOW), []
    back.quota = limit
    burst = [Sent(58.0) for _ in range(limit // MAX_TOKENS)]
    for sent in burst:
        back.admitted(58.0, MAX_TOKENS, sent, lambda: limit, wall=58.0)
    for sent in burst:
        back.ended(60.0, USED, MAX_TOKENS, reconciled.append, sent)
    test = Sent(60.0)
    back.admitted(60.0, MAX_TOKENS, test, lambda: MAX_TOKENS, wall=60.0)
    assert back.probe is test and not back.decisive
    back.ended(62.0, USED, MAX_TOKENS, reconciled.append, test)
    assert back.verdict is True and back.minute.open
    assert "or a clock minute's window started afresh" in back.describe()
    more = [Sent(62.0) for _ in range(limit // MAX_TOKENS - 1)]
    for sent in more:
        assert back.minute.hold(62.0, MAX_TOKENS, limit) == 0.0
        back.admitted(62.0, MAX_TOKENS, sent, lambda: limit, wall=62.0)
    beyond = Sent(62.5)
    assert back.minute.hold(62.5, MAX_TOKENS, limit) == 0.0  # the one beyond: the test
    back.admitted(62.5, MAX_TOKENS, beyond, lambda: limit, wall=62.5)
    assert back.minute.hold(62.5, MAX_TOKENS, limit) == 57.5  # the rest wait for it
    back.ended(64.0, USED, MAX_TOKENS, reconciled.append, more[0])
    return back, reconciled, beyond


def test_a_429_after_a_test_a_fresh_minute_explains_keeps_max_tokens_charged() -> None:
    """The request beyond the minute's window refused: the server keeps ``max_tokens``
    charged (a gateway counting per clock minute, not a give-back, served the test; taken for
    a give-back, it refused 3-6 requests a minute, 37 in a run from :58). The unused output
    given back of ours reserved in the minute (the test's and one answer's) is charged again;
    what the minute before lent is not (that window is gone)."""
    back, _, beyond = burst_before_the_minute()
    assert back.refused(beyond) == 2 * (MAX_TOKENS - USED)
    assert back.verdict is False and not back.minute.open
    assert "a 429 after a test a clock minute's fresh window explains" in back.describe()


def test_the_request_beyond_the_minute_served_confirms_the_give_back() -> None:
    """Served, the request beyond what a minute's window holds refutes that window: the
    give-back stands, nothing waits for it, and a later 429 teaches nothing of it."""
    back, _, beyond = burst_before_the_minute()
    back.ended(64.5, USED, MAX_TOKENS, [].append, beyond)
    assert back.verdict is True and not back.minute.open
    assert back.minute.hold(64.5, MAX_TOKENS, back.quota) == 0.0
    assert back.refused(Sent(65.0)) == 0 and back.verdict is True
