"""An output quota's give-back (Anthropic's OTPM: ``max_tokens`` charged when the request
arrives, the unused part given back when the answer ends): as much of it as the server's bucket
can still hold, however late ours settles, and never more. Pure arithmetic and the bucket track,
replayed against the server's own bucket."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmguard._admission.ratelimit.bucket import settle
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing._quota import TokenBucket


def test_a_give_back_comes_back_as_far_as_the_servers_cap_can_have_taken_none() -> None:
    """15 calls of 200 at 0 s in a bucket of 3,000 a minute, the first answered at 2 s having
    used 64: the server holds its 100 refilled and the 136 given back. Ours may rise to what
    a server full at the give-back would hold less what ours can have charged it since (the
    14 others: 3,000 - 2,800 = 200, 100 of the 136); the refund's bound alone gave back 36.
    With nothing of ours since, all 136; with more than the bucket, only the refund's."""
    before = dict(level=100.0, deficit=2_900.0, outstanding=3_000, capacity=3_000,
                  reserved=200, actual=64)
    assert settle(**before)[0] == 136.0  # the refund's bound: an estimate over the count
    assert settle(**before, since=2_800.0) == (200.0, 2_700.0, 2_800)
    assert settle(**before, since=0.0)[0] == 236.0
    assert settle(**before, since=3_500.0)[0] == 136.0
    assert settle(level=2_950.0, deficit=50.0, outstanding=200, capacity=3_000, reserved=200,
                  actual=64, since=0.0) == (3_000.0, 0.0, 0)  # never above its size


def output_window(capacity: int, window: float = 10.0, learn: bool = False) -> Window:
    """An output quota's window: a bucket, or learned (paced as one until the server says)."""
    return Window((Quota(capacity, window, True, not learn, learn=learn, part="output"),))


def test_an_answer_settled_after_the_bucket_was_full_again_gives_nothing_back() -> None:
    """The property's counterexample to giving back whole: three calls of 1 at 0 s answered
    at once having used none (the server gave them back then, full), their answers held by
    ours until a call of 371 at 72 s is answered, at 73 s: given back whole then, ours rose 3
    above the server's (141.3 to its 138.3) and the next call, admitted, was refused. Now
    only the 1 of the call answered last comes back: ours as the server's."""
    window = output_window(500, 60.0)
    small = [window.add(0.0, 1) for _ in range(3)]
    large = window.add(72.0, 371)
    for entry in small:
        window.adjust(73.0, entry, 0)
    window.adjust(73.0, large, 370)
    server = TokenBucket(500, 60.0)
    server.take(72.0, 371)
    server.give_back(73.0, 1)
    assert window.tracks[0].level == pytest.approx(500 - 371 + 500 / 60 + 1)
    assert server.wait(73.0, 139) > 0.0 and window.wait(73.0, 139) > 0.0


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(5, 40), learn=st.booleans(), ops=st.lists(
    st.tuples(st.sampled_from(["admit", "admit", "answer", "refund"]),
              st.sampled_from([0.0, 0.0, 0.3, 1.0, 4.0, 12.0]), st.integers(1, 40),
              st.integers(0, 50), st.sampled_from([0.0, 0.5, 1.0])),
    min_size=1, max_size=60))
def test_a_server_giving_unused_output_back_always_has_room_for_ours(capacity: int,
                                                                   learn: bool, ops) -> None:
    """Property: reservations admitted by an output quota, some refunded (never sent), the
    rest answered having used part of them, the server's answer ending anywhere between the
    request's arrival and ours settling it (an answer held back settles late): replayed
    against the server's own bucket, charged at arrival and given the unused part back when
    its answer ends, every request finds room; a bucket quota's or a learned one's."""
    window = output_window(capacity, learn=learn)
    now, outstanding, events, order = 0.0, [], [], 0
    for op, dt, amount, pick, when in ops:
        now += dt
        order += 1
        if op == "admit":
            amount = min(amount, capacity)
            now += window.wait(now, amount)
            entry = window.add(now, amount)
            outstanding.append((entry, now, order))
            events.append((now, order, "take", amount))
        elif outstanding:
            entry, admitted, at = outstanding.pop(pick % len(outstanding))
            if op == "refund":
                events.remove((admitted, at, "take", entry.tokens))
                window.adjust(now, entry, 0, live=0)
                continue
            used = pick % (entry.tokens + 1)
            ended = admitted + when * (now - admitted)
            tie = order - 0.5 if ended == now else at + 0.5  # just before ours, or after its own
            events.append((ended, tie, "give back", entry.tokens - used))
            window.adjust(now, entry, used)
    server = TokenBucket(capacity, 10.0)
    for at, _, kind, amount in sorted(events):
        if kind == "take":
            assert server.wait(at, amount) <= 1e-9, f"{amount} at {at}: {server!r}"
            server.take(at, amount)
        else:
            server.give_back(at, amount)
