"""A request and a token quota over one window sharing a log (:mod:`llmguard._admission.ratelimit.pair`):
the same admissions, totals, buckets, carries and entries as two tracks with a log each."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmguard._admission.ratelimit import auto as auto_module
from llmguard._admission.ratelimit import log as log_module
from llmguard._admission.ratelimit import pair as pair_module
from llmguard._admission.ratelimit import told
from llmguard._admission.ratelimit.auto import AutoTrack
from llmguard._admission.ratelimit.log import Entry, Log
from llmguard._admission.ratelimit.move import move
from llmguard._admission.ratelimit.pair import Pair
from llmguard._admission.ratelimit.quotas import build_quotas
from llmguard._admission.ratelimit.window import Quota, Window

QUOTAS = {
    "auto": (Quota(6, 10.5, False, learn=True, margin=0.5),
             Quota(500, 10.5, True, learn=True, margin=0.5)),
    "auto, roomy": (Quota(40, 10.5, False, learn=True, margin=0.5),
                    Quota(5000, 10.5, True, learn=True, margin=0.5)),
    "window": (Quota(6, 10.0, False), Quota(500, 10.0, True)),
    "window, roomy": (Quota(40, 10.0, False), Quota(5000, 10.0, True)),
    "auto with a burst": (Quota(6, 10.5, False, learn=True, margin=0.5),
                          Quota(500, 10.5, True, learn=True, margin=0.5),
                          Quota(3, 5.25, False, learn=True, margin=0.25),
                          Quota(250, 5.25, True, learn=True, margin=0.25)),
}

step = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 2.0) | st.sampled_from([5.25, 10.5, 21.0])),
    st.tuples(st.just("take"), st.integers(0, 150)),
    st.tuples(st.just("reconcile"), st.integers(0, 60), st.integers(0, 200)),
    st.tuples(st.just("refund"), st.integers(0, 60)),
    st.tuples(st.just("move"), st.integers(0, 60), st.integers(0, 150)),
    st.tuples(st.just("pause"), st.floats(0.0, 3.0)),
    st.tuples(st.just("cap"), st.booleans(), st.integers(0, 300), st.floats(0.5, 20.0),
              st.integers(-1, 60)),
    st.tuples(st.just("told"), st.booleans(), st.integers(-50, 300), st.integers(0, 60)),
    st.tuples(st.just("lower"), st.booleans(), st.integers(1, 400)),
)


def replay(quotas: tuple[Quota, ...], steps: list[tuple[Any, ...]]) -> tuple[Window, list[Any]]:
    window, entries, now, admitted = Window(quotas), [], 0.0, []
    for what, *args in steps:
        if what == "advance":
            now += args[0]
        elif what == "take":
            entry = window.take(now, args[0])
            admitted.append(entry is not None)
            if entry is not None:
                entries.append(entry)
        elif what == "reconcile" and entries:
            window.adjust(now, entries[args[0] % len(entries)], args[1])
        elif what == "refund" and entries:
            window.adjust(now, entries[args[0] % len(entries)], 0, live=0)
        elif what == "move" and entries:
            entry = move(window, now, entries[args[0] % len(entries)], args[1])
            admitted.append(entry is not None)
            if entry is not None:
                entries.append(entry)
        elif what == "pause":
            window.paused_until = max(window.paused_until, now + args[0])
        elif what == "cap":
            ticket = entries[args[3] % len(entries)] if entries and args[3] >= 0 else None
            window.cap(now, args[0], args[1], args[2], ticket)
        elif what == "told" and entries:  # a bucket's reading (``Window.cap``'s, once learned)
            ticket = entries[args[2] % len(entries)]
            for track in window.tracks:
                if isinstance(track, AutoTrack) and track.quota.tokens is args[0]:
                    told.drain(track, now, args[1], now, ticket, ticket.seq + 1,
                               window.readings.spread, track.limit)
        elif what == "lower":  # a limit learned (``exact`` once below what is outstanding)
            for track in window.tracks:
                if isinstance(track, AutoTrack) and track.quota.tokens is args[0]:
                    track.set_limit(now, min(track.limit, args[1]))
    window.wait(now, 1)  # expires every log to now (the unshared ones too)
    return window, [admitted, [(e.time, e.tokens, e.live, e.answered, e.queued,
                                getattr(e, "way", None)) for e in entries]]


def state(window: Window) -> list[Any]:
    """What each track counts: its total and limit, its log's entries (time, and the sum of
    its unit), its history, carry and bucket (what the server's last reading told it
    included: :mod:`.told`)."""
    out: list[Any] = []
    for track in window.tracks:
        log = track.log if isinstance(track, AutoTrack) else track
        out.append((log.used, log.limit, log.cut,
                    [(e.time, log.weight(e), e.first) for e in log.entries]))
        if isinstance(track, AutoTrack):
            bucket, carry = track.bucket, track.carry
            out.append(([e.time for e in track.recent], bucket.level, bucket.deficit,
                        bucket.outstanding, bucket.at, bucket.told, bucket.told_at,
                        bucket.since_told, bucket.told_seq, bucket.exact, bucket.owed,
                        None if carry is None else (carry.spent, carry.lines)))
    return out


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(QUOTAS)), st.lists(step, max_size=60), st.booleans())
def test_a_shared_log_counts_as_a_log_each(kind, steps, small) -> None:
    """Property: a window whose token quota shares its request quota's log admits the same
    calls and ends with the same totals, log entries (folded ones included: ``small`` folds
    past 2 entries), histories, carries and buckets as one whose quotas keep a log each,
    whatever the takes, moves, reconciliations, refunds, pauses and caps."""
    with pytest.MonkeyPatch.context() as patch:
        if small:
            for module in (log_module, auto_module):
                patch.setattr(module, "FOLD_AT", 2)
        shared, done = replay(QUOTAS[kind], steps)
        patch.setattr(pair_module, "_shares", lambda track, quota: False)
        apart, twin = replay(QUOTAS[kind], steps)
    assert any(type(t) is Pair or (type(t) is Log and t.peer) for t in shared.pace)
    assert len(apart.pace) == len(apart.tracks)
    assert done == twin
    assert state(shared) == state(apart)


def test_rpm_and_tpm_share_one_log_and_other_windows_keep_their_own() -> None:
    """``rpm`` and ``tpm`` (one window) share a log and run as one pair; an ``rps`` between
    them, a bucket refill or a window of another length keeps a log of its own."""
    window = Window(build_quotas(60, None, 1000, None, None, "auto"))
    first, second = window.tracks
    assert second.log.entries is first.log.entries and second.recent is first.recent
    assert [type(t) for t in window.pace] == [Pair]
    assert Window(build_quotas(60, None, 1000, None, None, "window")).tracks[1].peer is not None
    for quotas in (build_quotas(60, 2, 1000, None, None, "auto"),
                   build_quotas(60, None, 1000, None, None, "continuous"),
                   (Quota(60, 60.5, False, learn=True, margin=0.5),
                    Quota(1000, 30.5, True, learn=True, margin=0.5))):
        window = Window(quotas)
        assert len(window.pace) == len(window.tracks)
        logs = [t.log.entries for t in window.tracks if isinstance(t, AutoTrack)]
        assert len({id(entries) for entries in logs}) == len(logs)


def test_a_log_shares_only_with_the_other_unit_over_its_window() -> None:
    """Sharing a log of the same unit, of another window, or one already shared is refused
    (each total would count the entries wrongly)."""
    requests = Log(Quota(10, 60.0, False))
    for quota in (Quota(10, 60.0, False), Quota(100, 30.0, True)):
        with pytest.raises(ValueError, match="shares the entries"):
            Log(quota, requests)
    Log(Quota(100, 60.0, True), requests)
    with pytest.raises(ValueError, match="shares the entries"):
        Log(Quota(100, 60.0, True), requests)


def test_the_shared_log_expires_off_both_totals_whichever_expires() -> None:
    """The token log expiring the shared entries counts them off the request log's total too
    (written against the arithmetic: 3 requests of 10, 20 and 30 tokens)."""
    requests = Log(Quota(10, 60.0, False))
    tokens = Log(Quota(100, 60.0, True), requests)
    for at, size in ((0.0, 10), (1.0, 20), (2.0, 30)):
        entry = Entry(at, size)
        requests.add(at, entry)
        tokens.add(at, entry)
    assert (requests.used, tokens.used, len(requests.entries)) == (3, 60, 3)
    tokens.expire(61.0)
    assert (requests.used, tokens.used, len(tokens.entries)) == (1, 30, 1)
