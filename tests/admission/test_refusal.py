"""What a 429 teaches (``refusal.py``, ``charge.py``, ``probing.py``): the quota its message
names is the one learned, whatever our own counts make look fullest; and against a server
that answers without token readings, a refusal on tokens measures what it charges against our
estimate, which probes (one request at a time) approach from below. Everything takes ``now``:
tested directly."""

import math

import pytest

from llmguard._admission.ratelimit import bounds
from llmguard._admission.ratelimit.charge import OPENING
from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.named import Named
from llmguard._admission.ratelimit.window import Quota, Window

TOKENS, REQUESTS = Named(True), Named(False)


def window(rpm: int = 60, tpm: int = 10_000) -> Window:
    return Window((Quota(rpm, 60.0, False, learn=True), Quota(tpm, 60.0, True, learn=True)))


def heard(w: Window) -> Window:
    """``w`` after token readings calibrated its charge at the estimate (factor 1)."""
    w.charge.heard, w.charge.factor = True, 1.0
    return w


def admit(w: Window, now: float, estimate: int, count: int) -> list[Entry]:
    entries = [w.take(now, estimate) for _ in range(count)]
    assert all(e is not None for e in entries)
    return entries


def test_a_429_naming_tokens_learns_the_token_limit_though_requests_look_fuller() -> None:
    """59 requests of 160 tokens, the 60th refused: by our counts the requests quota is full
    (60/60) and tokens are not (9,600/10,000). Unnamed, the fullest rule learns "59
    requests"; the message naming tokens learns "9,440 tokens" and leaves requests alone."""
    for which, requests, tokens in ((None, 59, 10_000), (TOKENS, 60, 59 * 160)):
        w = heard(window())
        admit(w, 0.0, 160, 59)
        ticket = w.take(0.0, 160)
        w.refused(1.0, ticket, 59.0, wall=1.0, named=which)
        assert (w.limit(False), w.limit(True)) == (requests, tokens), which


def test_a_429_naming_requests_learns_the_request_limit() -> None:
    """A refusal naming requests at the 58th though tokens look fuller (9,690 of 10,000 with
    it): the server admits 57 requests, tokens untouched."""
    w = heard(window())
    admit(w, 0.0, 170, 57)
    w.refused(1.0, w.take(0.0, 170), 59.0, wall=1.0, named=REQUESTS)
    assert (w.limit(False), w.limit(True)) == (57, 10_000)
    assert "57 requests" in w.shape.limits


def test_the_limit_a_message_gives_is_the_servers() -> None:
    """"Limit 8000" in the message: the token limit in force from then on, however far from
    the quota our count was; a limit per day teaches nothing about the minute's."""
    w = heard(window())
    admit(w, 0.0, 100, 10)
    w.refused(1.0, w.take(0.0, 100), 59.0, wall=1.0, named=Named(True, "", 8000))
    assert w.limit(True) == 8000 and "limit is 8000 tokens" in w.shape.limits
    daily = heard(window())
    admit(daily, 0.0, 160, 59)
    daily.refused(1.0, daily.take(0.0, 160), 3600.0, wall=1.0,
                  named=Named(True, "", 9000, minute=False))
    assert (daily.limit(False), daily.limit(True)) == (60, 10_000)


def test_answers_without_token_readings_keep_what_was_reserved() -> None:
    """The opening burst reserved the estimate times ``OPENING``; answers that report no
    token readings (usage 78 of 212 estimated) give none of it back: the server may keep
    ``max_tokens`` charged, at more than our estimate."""
    w = window()
    entries = admit(w, 0.0, 212, 40)
    assert w.take(0.0, 212) is None
    for entry in entries:
        w.adjust(2.0, entry, 78)
    assert w.charge.how == "silent"
    assert w.available(2.0, True) == 10_000 - 40 * math.ceil(212 * OPENING)


def test_probes_go_one_at_a_time_and_bring_the_factor_down() -> None:
    """Held back at the factor, within the quota at our bare estimates: one request goes as
    a probe, the next waits for its answer. Admitted, the server counted 41 estimates within
    the quota, or a bucket refilled meanwhile: the factor comes down only by what the refill
    since ours went cannot explain (here nothing: it stays), and once the shape is learned a
    fixed window, to what the probes served allow in their own clock minute (``clocked``:
    ours of the minute before are no part of its count), here no lower than it was."""
    w = window()
    for entry in admit(w, 0.0, 212, 40):
        w.adjust(2.0, entry, 212)
    assert w.wait(2.0, 212) == 0.0
    first = w.take(2.0, 212)
    assert first is not None
    assert w.take(2.0, 212) is None and w.wait(2.0, 212) > 0.0
    w.adjust(4.0, first, 212)
    second = w.take(4.0, 212)
    assert second is not None
    fits = (10_000 - 41) / (41 * 212)
    assert w.charge.windowed == pytest.approx(fits)
    assert w.charge.factor == OPENING  # a bucket refilling 2 s explains more than 1.15x
    w.shape.kind = "fixed"  # (learned so: :func:`.learn.become_fixed`)
    assert w.charge.clocked == pytest.approx((10_000 - 41) / (41 * 212))  # each rounded up
    bounds.windowed(w.charge, w, 4.0)
    assert w.charge.factor == pytest.approx(min(OPENING, w.charge.clocked))
    w.charge.clocked = 1.12  # a probe served in a fuller minute: it comes down to that
    bounds.windowed(w.charge, w, 4.0)
    assert w.charge.factor == pytest.approx(1.12)


def test_a_token_429_while_probing_measures_the_factor_and_keeps_it() -> None:
    """The server charges 1.11x: it admits 42 of 212 and refuses the 43rd. The factor is then
    what fits the 42 within the quota, between 10,000 / (43 x 212) and 10,000 / (42 x 212), and
    it is kept: every entry counts at it, no probe follows."""
    w = window()
    for entry in admit(w, 0.0, 212, 40):
        w.adjust(2.0, entry, 78)
    probe = w.take(2.0, 212)
    w.adjust(4.0, probe, 78)
    probe = w.take(4.0, 212)
    w.adjust(6.0, probe, 78)
    refused = w.take(6.0, 212)
    w.refused(6.5, refused, 53.5, wall=6.5, named=TOKENS)
    charge = w.charge
    assert charge.how == "kept" and "keeps it" in w.shape.limits
    assert 10_000 / (43 * 212) < charge.factor <= 10_000 / (42 * 212)
    assert 42 * math.ceil(212 * charge.factor) <= 10_000  # the 42 fit again next window
    assert not charge.silent and w.wait(6.5, 212) > 0.0
    w.adjust(7.0, refused, 212)  # settled: a 429 charged none of its tokens (a retry is anew)
    assert w.available(7.0, True) == 10_000 - 42 * math.ceil(212 * charge.factor)


def test_a_token_429_in_the_opening_burst_raises_the_factor() -> None:
    """A server charging 1.3x refuses the opening burst's 36th (the opening factor covers an
    estimate 13% under): the factor rises to what fits the 35 admitted, unnamed as well (the
    token quota is the fullest by our counts)."""
    w = window(rpm=1000)
    entries = admit(w, 0.0, 212, 40)
    w.refused(0.5, entries[35], 59.5, wall=0.5)
    assert w.charge.how == "kept"
    assert w.charge.factor == pytest.approx((10_000 - 35) / (35 * 212))


def test_probes_never_go_past_the_quota_at_our_bare_estimates() -> None:
    """A request our estimates alone leave no room for waits: probes test the factor between
    1 and the opening's, never the quota itself."""
    w = window(tpm=1000)
    for entry in admit(w, 0.0, 400, 2):
        w.adjust(2.0, entry, 400)
    assert w.take(2.0, 300) is None and w.wait(2.0, 300) > 0.0
    probe = w.take(2.0, 100)
    assert probe is not None
    w.adjust(4.0, probe, 100)
    assert w.take(4.0, 300) is None and w.wait(4.0, 300) > 0.0


def test_a_probe_only_the_unused_tokens_given_back_admit_shows_the_server_gives_them_back() -> None:
    """Our bare estimates leave no room, the answers' usage (100 of 400 each) would: one
    request goes as the probe of whether the server gives unused tokens back. Admitted, it
    does: the usage counts from then on (``trusted``), the answers' unused tokens come back."""
    w = window(tpm=1000)
    for entry in admit(w, 0.0, 400, 2):
        w.adjust(2.0, entry, 100)
    assert w.take(2.0, 300) is not None  # no room at the estimates (800 + 300): a test
    assert w.charge.testing and w.take(2.0, 300) is None  # one at a time
    w.adjust(4.0, w.charge.probing, 100)
    assert w.take(4.0, 300) is not None
    assert w.charge.how == "trusted" and w.charge.factor == 1.0
    assert w.available(4.0, True) == 1000 - 3 * 100 - 300


def test_a_refused_give_back_probe_keeps_what_was_charged() -> None:
    """The probe that only given-back tokens admit is refused on tokens: the server keeps
    what it charged; nothing is given back and no further probe goes."""
    w = window(tpm=1000)
    for entry in admit(w, 0.0, 400, 2):
        w.adjust(2.0, entry, 100)
    probe = w.take(2.0, 300)
    w.refused(2.5, probe, 57.5, wall=2.5, named=TOKENS)
    assert w.charge.how == "kept" and not w.charge.trusted
    assert w.wait(2.5, 300) > 0.0


def probed_to_a_refusal(start: float) -> tuple[Window, Entry]:
    """Opening burst at ``start``, answered without readings, two probes admitted, the third
    admitted by us and about to be refused on tokens (the server charges 1.11x)."""
    w = window()
    for entry in admit(w, start, 212, 40):
        w.adjust(start + 2.0, entry, 78)
    for at in (2.0, 4.0):
        probe = w.take(start + at, 212)
        w.adjust(start + at + 2.0, probe, 78)
    return w, w.take(start + 6.0, 212)


@pytest.mark.parametrize(("seconds", "fixed"), [(14.0, True), (54.0, False), (60.0, False)])
def test_a_pause_ending_before_our_oldest_leaves_shows_a_fixed_window(
        seconds: float, fixed: bool) -> None:
    """Ours alone filled the token quota (40 s into a minute, counted at the factor the
    refusal measured): a 429 asking for 14 s, to the minute, before our oldest request would
    leave a sliding window (at 100) and longer than a bucket takes to refill it, is a fixed
    window's boundary, learned at once (its full window admitted there). 54 s (when our
    oldest leaves: a sliding window's) only supposes the clock minute, to be confirmed; a
    window's constant 60 (LiteLLM's proxy) says nothing."""
    w, refused = probed_to_a_refusal(40.0)
    w.refused(46.0, refused, seconds, wall=46.0, named=TOKENS)
    assert (w.shape.kind == "fixed") is fixed, w.shape
    if fixed:
        assert w.shape.epoch == pytest.approx(60.0)
        w.adjust(46.5, refused, 212)
        assert w.wait(60.0 + w.shape.skew() + 0.01, 212) == 0.0


def test_a_give_back_probe_a_refilled_bucket_would_admit_proves_nothing() -> None:
    """Our bare estimates leave no room, the answers' usage (100 of 400 each) would: the
    give-back probe goes 30 s after ours, when a token bucket of the quota (1,000 a minute)
    has refilled 500. Admitted, it shows nothing: such a bucket admits it whatever it gives
    back (headerless token bucket: trusted, then 5 429s). Not trusted, and no further test."""
    w = window(tpm=1000)
    for entry in admit(w, 0.0, 400, 2):
        w.adjust(2.0, entry, 100)
    probe = w.take(30.0, 300)
    assert probe is not None and w.charge.testing
    w.adjust(32.0, probe, 100)
    assert w.take(32.0, 300) is not None  # the next probe, as its answer is read
    assert w.charge.how == "silent" and w.charge.refills and w.charge.factor == OPENING
    w.adjust(34.0, w.charge.probing, 100)
    assert w.take(34.0, 300) is None and w.wait(34.0, 300) > 0.0  # no test goes again


def test_a_probe_a_learned_bucket_refuses_keeps_the_factor() -> None:
    """A bucket learned (:mod:`.apart`), the factor probed down to 1.116 on a server charging
    1.11x, and the probes served so far fit no window at 1x or more (``windowed`` 1): a probe
    the bucket as we count ours would have admitted (it arrived sooner than the margin allows
    for) is refused. Read as a window's count, that took the factor to 1 (42 429s of 126 in
    the strict benchmark at :40); a bucket it is: the factor stays, kept."""
    w = window()
    for entry in admit(w, 0.0, 212, 40):
        w.adjust(2.0, entry, 212)
    w.shape.kind = "bucket"  # (learned so: :func:`.apart.bucket`)
    w.charge.factor, w.charge.windowed = 1.116, 1.0
    for entry in [w.add(30.0, 212) for _ in range(20)]:  # what the bucket refilled meanwhile
        w.adjust(32.0, entry, 212)
    probe = w.add(32.0, 212)  # 61 of 212 within a window: no window's count at 1x or more
    w.refused(32.01, probe, 1.0, wall=32.01, named=TOKENS)
    assert w.charge.how == "kept" and w.charge.factor >= 1.116


def test_a_429_to_one_sent_just_before_the_probe_is_the_probes() -> None:
    """Sent within the margin before the probe of a server that says nothing, a request may
    arrive after it: its 429 is the probe's refusal (the probe went beyond our count, the
    rest fit). One sent earlier, or after the probe, is not."""
    from types import SimpleNamespace

    from llmguard._admission.ratelimit.silent import overtaken

    probe = Entry(10.0, 1)
    shape = SimpleNamespace(probe=probe, quiet=True, margin=0.05)
    assert overtaken(shape, Entry(9.97, 1)) and overtaken(shape, Entry(10.0, 1))
    assert not overtaken(shape, Entry(9.9, 1)) and not overtaken(shape, Entry(10.01, 1))
    shape.quiet = False  # the server said something: no silent probe under way
    assert not overtaken(shape, Entry(9.97, 1))
