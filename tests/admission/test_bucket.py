"""RateLimit(refill="continuous"): the token-bucket arithmetic as pure functions, the bucket
track against a provider's bucket (never above it, refunds included), and the layer paced like a
continuously refilling provider, all in virtual time."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.ratelimit.bucket import Bucket, level_at, settle, wait_for
from llmguard._admission.ratelimit.log import Entry as LogEntry
from llmguard._admission.ratelimit.told import lift, settled as told_settled
from llmguard._admission.ratelimit.window import SLACK, Quota, Window
from llmguard.testing import TokenBucketServer
from llmguard.testing._quota import TokenBucket

# --- pure functions ----------------------------------------------------------------------


def test_level_refills_linearly_up_to_the_capacity() -> None:
    """A bucket gains ``rate`` per second until full; an over-charged (negative) one refills the
    same way; a reading at or before the last one changes nothing."""
    assert level_at(2.0, 10.0, 13.0, capacity=10, rate=1.5) == 6.5
    assert level_at(2.0, 10.0, 100.0, capacity=10, rate=1.5) == 10
    assert level_at(-3.0, 0.0, 2.0, capacity=10, rate=1.0) == -1.0
    assert level_at(4.0, 5.0, 5.0, capacity=10, rate=1.0) == 4.0
    assert level_at(4.0, 5.0, 4.0, capacity=10, rate=1.0) == 4.0


def test_wait_is_the_time_to_refill_the_missing_units() -> None:
    """0 when the units are there; else the missing units over the refill rate."""
    assert wait_for(5.0, 5, rate=2.0) == 0.0
    assert wait_for(1.0, 5, rate=2.0) == 2.0
    assert wait_for(-4.0, 1, rate=0.5) == 10.0


def test_refund_while_the_bucket_is_in_use_gives_everything_back() -> None:
    """Right after a reservation (deficit = outstanding = the reservation), a refund restores
    the level exactly and leaves nothing outstanding."""
    assert settle(level=3.0, deficit=7.0, outstanding=7, capacity=10, reserved=7,
                  actual=None) == (10.0, 0.0, 0)
    # two reservations outstanding, the first refunded: both still count as the deficit
    assert settle(level=0.0, deficit=10.0, outstanding=10, capacity=10, reserved=4,
                  actual=None) == (4.0, 6.0, 6)


def test_refund_after_the_provider_could_have_filled_up_gives_nothing_back() -> None:
    """The counterexample to giving everything back: capacity 10, 1 unit/s. A takes 5 at t=0,
    both buckets are full again at t=5 (the provider's never lost anything), B takes all 10 at
    t=5: the provider (which never sees A) holds 0 like us, so refunding A must give back
    nothing. The refill clipped the deficit to what it could still be."""
    bucket = Bucket(Quota(10, 10.0, True, True))
    a, b = Entry(0.0, 5), Entry(5.0, 10)
    bucket.add(0.0, a)
    assert bucket.wait(5.0, 10) == 0.0  # refilled: full again, deficit clipped to 0
    bucket.add(5.0, b)
    bucket.adjust(5.0, a, 0, 0)
    assert bucket.level == 0.0 and bucket.wait(5.0, 1) == 1.0


def test_using_less_gives_back_at_most_the_difference_and_more_is_charged() -> None:
    """Reconciling down gives back (reserved - used) when the bound allows; up charges the
    excess at once; either way the reservation stops being outstanding."""
    assert settle(level=2.0, deficit=8.0, outstanding=8, capacity=10, reserved=8,
                  actual=3) == (7.0, 0.0, 0)
    level, deficit, outstanding = settle(level=2.0, deficit=8.0, outstanding=8, capacity=10,
                                         reserved=8, actual=11)
    assert (level, outstanding) == (-1.0, 0) and deficit == 0.0


class Entry:
    """The two fields a track reads of a window entry."""

    def __init__(self, time: float, tokens: int) -> None:
        self.time, self.tokens, self.live = time, tokens, 1


# --- the bucket never holds more than the provider's -------------------------------------

operations = st.lists(
    st.tuples(st.sampled_from(["admit", "admit", "refund", "keep"]),
              st.sampled_from([0.0, 0.0, 0.3, 1.0, 4.0, 12.0]), st.integers(1, 12),
              st.integers(0, 50)),
    min_size=1, max_size=60)


@settings(max_examples=500, deadline=None)
@given(capacity=st.integers(5, 15), ops=operations)
def test_admissions_never_exceed_the_providers_bucket(capacity: int, ops) -> None:
    """Property: reservations admitted by a continuous quota, some later refunded (never sent),
    the rest sent: replayed against the provider's own bucket (``testing``'s TokenBucket, which
    sees only those sent, at admission), every one of them finds room. Refunds give back units
    only as far as that stays true."""
    quota = Quota(capacity, 10.0, True, True)
    window = Window((quota, Quota(capacity // 2 + 1, 5.0, False, True)))
    now, outstanding, admitted = 0.0, [], []
    for op, dt, amount, pick in ops:
        now += dt
        if op == "admit":
            amount = min(amount, capacity)
            now += window.wait(now, amount)
            entry = window.add(now, amount)
            outstanding.append((entry, len(admitted)))
            admitted.append([now, amount, True])
        elif outstanding:
            entry, index = outstanding.pop(pick % len(outstanding))
            if op == "refund":
                window.adjust(now, entry, 0, live=0)
                admitted[index][2] = False  # never reached the provider
            else:
                window.adjust(now, entry, entry.tokens)  # sent, settled
    tokens, requests = TokenBucket(capacity, 10.0), TokenBucket(capacity // 2 + 1, 5.0)
    for at, amount, sent in admitted:
        if not sent:
            continue
        assert tokens.wait(at, amount) <= 1e-9, f"{amount} tokens at {at}: {tokens!r}"
        assert requests.wait(at, 1) <= 1e-9, f"a request at {at}: {requests!r}"
        tokens.take(at, amount)
        requests.take(at, 1)


def test_admission_times_match_the_providers_bucket() -> None:
    """Without refunds the continuous quota admits a run of equal requests exactly when the
    provider's bucket first has room (plus SLACK): the ideal, not whole windows later."""
    window, provider = Window((Quota(10, 60.0, True, True),)), TokenBucket(10, 60.0)
    now = 0.0
    for k in range(1, 13):
        now += window.wait(now, 3)
        window.add(now, 3)
        assert now <= provider.earliest(k, 3, 0.0) + 2 * SLACK * k
        assert provider.wait(now, 3) <= 1e-9
        provider.take(now, 3)


def test_headers_drain_the_bucket_to_what_the_provider_reports() -> None:
    """``x-ratelimit-remaining-tokens`` lowers a continuous bucket to the provider's level now
    (its reset says when the provider is full again, not a cap until then): the next request
    waits for the refill, not for the reset."""
    window = Window((Quota(600, 60.0, True, True),))
    window.cap(0.0, True, 5, 59.5)
    assert window.available(0.0, True) == 5
    assert window.wait(0.0, 15) == pytest.approx(1.0 + SLACK)
    assert not window.caps


def test_a_reading_of_the_servers_own_bucket_lifts_ours_to_it() -> None:
    """A reading's certain bound of the server's own bucket (a learned one) lifts ours to it
    (``told.lift``), less what the server holds beyond our limit (a share of its quota)
    and ours not settled it counted as arrived (some may still be queued below us); the
    drain only lowers it. Lowered only, a bound our count once fell below (an opening
    reserved at more than the server charged) stuck until the bucket was full again, which a
    saturated run never is."""
    bucket = Bucket(Quota(1000, 60.0, True, True))
    bucket.add(0.0, Entry(0.0, 900))
    bucket.drain_to(0.0, 500)
    assert bucket.level == 100  # only lowers
    lift(bucket, 0.0, 500, 0.0, 0.0, 1000)
    assert bucket.level == 500
    lift(bucket, 0.0, 800, 0.0, 0.0, 1500)  # the server's 500 beyond ours: not ours
    assert bucket.level == 500
    bucket.drain_to(0.0, 100)
    lift(bucket, 0.0, 900, -3.0, 0.0, 1500)  # its refill since, at ours
    assert bucket.level == pytest.approx(900 + 3 * 1000 / 60 - 500)
    bucket.drain_to(0.0, 100)
    lift(bucket, 0.0, 500, 0.0, 300.0, 1000)  # 300 of ours perhaps still queued below
    assert bucket.level == 200
    lift(bucket, 0.0, 2000, 0.0, 0.0, 1000)
    assert bucket.level == 1000  # never above full


def test_an_idle_bucket_is_full_with_nothing_outstanding() -> None:
    """A window of buckets is idle (swept like a fresh one) only once every bucket is full
    again and every reservation settled; settling twice changes nothing."""
    window = Window((Quota(10, 10.0, True, True),))
    entry = window.add(0.0, 4)
    assert not window.idle(100.0)  # full, but the reservation is still out
    window.adjust(100.0, entry, 4)
    window.adjust(100.0, entry, 0, live=0)  # settled already: no refund on top
    assert window.idle(100.0) and window.available(100.0, True) == 10


def test_a_lowered_limit_is_what_the_bucket_refills_to() -> None:
    """``set_limit`` (a limit learned from the server) is the size every refill and
    settlement clips to from then on (the refill's float copy of it follows), and a charge
    of exactly the reservation leaves the level as taken."""
    bucket = Bucket(Quota(10, 10.0, True, True))
    bucket.set_limit(0.0, 4)
    entry = LogEntry(0.0, 3, seq=1)
    bucket.take(0.0, 3)
    assert bucket.available(0.0) == 1
    bucket.settled(2.0, entry, 3, 3)  # two seconds of refill at 0.4 a second, no charge
    assert bucket.level == pytest.approx(1.8) and bucket.outstanding == 0
    assert bucket.available(100.0) == 4 and bucket.level == 4.0


# --- the layer ---------------------------------------------------------------------------


def test_refill_is_checked_at_construction() -> None:
    """Anything but "auto", "window" or "continuous" is a ValueError naming each and when to use it."""
    with pytest.raises(ValueError, match="refill must be 'auto'.*'window'.*'continuous'.*OpenAI"):
        lg.RateLimit(rpm=10, refill="bucket")


async def test_layer_paces_at_the_refill_rate_after_the_burst() -> None:
    """RateLimit(rpm=60, refill="continuous") against TokenBucketServer(rpm=60): 90 calls at
    once, the first 60 at t=0, then one per second as the provider refills; no 429, the last
    arrival within a few ms of the provider's earliest (30 s), where the sliding log would wait
    for the next window (60 s)."""
    for refill, last in (("continuous", 30.0), ("window", 60.0)):
        start = asyncio.get_running_loop().time()
        server = TokenBucketServer(rpm=60, latency=1.0)
        guarded = lg.guard(lg.RateLimit(rpm=60, refill=refill, margin=0))(server.acompletion)
        await asyncio.gather(*(guarded(messages=[{"role": "user", "content": "hi"}])
                               for _ in range(90)))
        stats = server.statistics()
        assert stats.rate_limited == 0
        assert server.arrivals[-1].at - start == pytest.approx(last, abs=0.1)


async def test_refunds_and_reconciliation_through_the_layer() -> None:
    """A call refused below (AdmissionError) is refunded in full; a call using fewer tokens
    than reserved gets the rest back (charge="actual"); nothing stays outstanding."""
    layer = lg.RateLimit(tpm=1000, tokens=lambda n, used=None: n, refill="continuous")

    async def refuse_without_used(call, call_next):
        if len(call.args) < 2:
            raise lg.AdmissionTimeout("refused below")
        return await call_next(call)

    async def provider(n: int, used: int | None = None):
        return {"usage": {"prompt_tokens": used, "completion_tokens": 0}}

    guarded = lg.guard(layer, refuse_without_used)(provider)
    with pytest.raises(lg.AdmissionTimeout):
        await guarded(600)
    assert layer.statistics().tokens_available == 1000
    await guarded(600, 100)
    assert layer.statistics().tokens_available == 900
    window = next(iter(layer.backend._windows.values()))
    assert window.tracks[0].outstanding == 0


async def test_cancelled_waiter_leaves_the_bucket_untouched() -> None:
    """A call cancelled while waiting for the bucket takes nothing; the next call is admitted
    as soon as the refill allows."""
    layer = lg.RateLimit(rpm=60, refill="continuous")
    guarded = lg.guard(layer)(asyncio.sleep)
    await asyncio.gather(*(guarded(0) for _ in range(60)))
    waiter = asyncio.ensure_future(guarded(0))
    await asyncio.sleep(0.5)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    loop = asyncio.get_running_loop()
    start = loop.time()
    await guarded(0)
    assert loop.time() - start == pytest.approx(0.5, abs=0.01)
    assert layer.statistics().waiting == 0 and not layer._lines


@settings(max_examples=300, deadline=None)
@given(level=st.floats(-20, 10), deficit=st.floats(0, 30), others=st.integers(0, 20),
       reserved=st.integers(0, 10), seq=st.integers(0, 4), told_seq=st.integers(0, 4))
def test_a_refund_settles_as_settle_and_the_ceiling_do(level: float, deficit: float,
                                                       others: int, reserved: int, seq: int,
                                                       told_seq: int) -> None:
    """``Bucket.settled`` writes a refund out (two a call counted again as it leaves an inner
    queue): the same level, deficit, outstanding and ceiling as :func:`settle` then
    :func:`.told.settled`, which every other settlement goes through."""
    bucket = Bucket(Quota(10, 10.0, True, True))
    bucket.at, bucket.level, bucket.deficit = 5.0, level, deficit
    bucket.outstanding, bucket.since_told, bucket.told_seq = others + reserved, 3.0, told_seq
    entry = LogEntry(1.0, reserved, seq=seq)
    after, deficit_after, outstanding_after = settle(level, deficit, others + reserved, 10,
                                                     reserved, None)
    expected = Bucket(Quota(10, 10.0, True, True))
    expected.since_told, expected.told_seq = 3.0, told_seq
    level_after = told_settled(expected, 5.0, entry, reserved, level, after, True)
    bucket.settled(5.0, entry, reserved, None)
    assert (bucket.level, bucket.deficit, bucket.outstanding, bucket.since_told) == (
        level_after, deficit_after, outstanding_after, expected.since_told)
