"""RateLimit: request and token quotas, waiting in order (priority, then round-robin across
partitions, then first come), reconciliation, refunds, 429 pauses, provider headers, keys,
errors, cancellation; the sliding-window arithmetic directly."""

import asyncio
import itertools
import math

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.ratelimit import log as log_module
from llmguard._admission.ratelimit.backend import MemoryBackend
from llmguard._admission.ratelimit.charge import OPENING
from llmguard._admission.ratelimit.layer import DEFAULT_PAUSE, parse_duration
from llmguard._admission.ratelimit.log import Entry, Log
from llmguard._admission.ratelimit.window import SLACK, Quota, Window
from llmguard.testing import FakeLLM, virtual_wall_clock
from llmguard.testing._provider import RateLimited


def at_baseline(limit: lg.RateLimit) -> bool:
    s = limit.statistics()
    return s.in_flight == 0 and s.waiting == 0 and s.reserved_tokens == 0 and not limit._lines


class Recorder:
    """A provider stand-in that records (time, tokens) of every call it receives."""

    def __init__(self, latency: float = 0.5, usage=None) -> None:
        self.log: list[tuple[float, int]] = []
        self.latency = latency
        self.usage = usage

    async def __call__(self, n: int, used: int | None = None):
        total = n if used is None else used
        self.log.append((asyncio.get_running_loop().time(), n, total))
        await asyncio.sleep(self.latency)
        return {"usage": {"prompt_tokens": total, "completion_tokens": 0}}


def by_n(n: int, used: int | None = None) -> int:
    return n


async def tenant_of(call: lg.Call, call_next):
    """An outer layer like the gateway's: the call's tenant and priority from its keywords."""
    call.partition = call.kwargs.get("tenant")
    call.priority = call.kwargs.get("priority", 0)
    return await call_next(call)


class Served:
    """A provider that records the order its calls arrive in, by name."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []

    async def __call__(self, name: str, n: int = 0, *, tenant=None, priority=0) -> str:
        self.log.append((asyncio.get_running_loop().time(), name))
        return name

    def order(self) -> list[str]:
        return [name for _, name in self.log]


# --- construction and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "needs a quota"),
        ({"rpm": 0}, "rpm must be a positive integer"),
        ({"tpm": -5}, "tpm must be a positive integer"),
        ({"rps": 1.5}, "rps must be a positive integer"),
        ({"rpm": 10, "burst": 0}, "burst must be a fraction"),
        ({"rpm": 10, "burst": 1.5}, "burst must be a fraction"),
        ({"rpm": 10, "max_wait": -1}, "max_wait must be a positive number"),
        ({"rpm": 10, "max_wait": float("nan")}, "max_wait must be a positive number"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match) -> None:
    """Zero, negative, fractional or NaN settings raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        lg.RateLimit(**kwargs)


def test_non_callable_estimator_is_a_type_error() -> None:
    """tokens/usage/key must be callables."""
    with pytest.raises(TypeError, match="tokens must be a callable"):
        lg.RateLimit(tpm=10, tokens=5)


async def test_request_larger_than_the_token_quota_fails_at_once() -> None:
    """An estimate above the token quota can never be admitted: RequestTooLarge, no waiting."""
    layer = lg.RateLimit(tpm=1000, tokens=by_n)
    guarded = lg.guard(layer)(Recorder())
    with pytest.raises(lg.RequestTooLarge, match="1500 tokens.*1000 tokens per minute.*raise"):
        await guarded(1500)
    assert layer.statistics().rejected == 1 and at_baseline(layer)


async def test_burst_caps_a_shorter_window_and_the_request_size() -> None:
    """burst=0.1 admits at most 10% of the quota in any 6 s; larger requests are too large."""
    rec = Recorder(latency=0)
    guarded = lg.guard(lg.RateLimit(rpm=100, tpm=10_000, burst=0.1, tokens=by_n))(rec)
    with pytest.raises(lg.RequestTooLarge):
        await guarded(1001)
    await asyncio.gather(*(guarded(10) for _ in range(20)))
    times = [t for t, *_ in rec.log]
    assert sum(t < 6 for t in times) == 10 and max(times) < 7


# --- quotas and order ----------------------------------------------------------------------


async def test_rpm_admits_the_quota_then_waits_a_window() -> None:
    """With rpm=5, five calls go at once and the sixth when the first leaves the window."""
    rec = Recorder(latency=0)
    guarded = lg.guard(lg.RateLimit(rpm=5, margin=0))(rec)
    await asyncio.gather(*(guarded(1) for _ in range(6)))
    times = [t for t, *_ in rec.log]
    assert times[:5] == [0] * 5 and 60 <= times[5] <= 60 + 2 * SLACK


async def test_large_request_is_not_starved_by_small_ones() -> None:
    """FIFO: a large request queued behind the first is served before later small ones."""
    rec = Recorder(latency=0)
    guarded = lg.guard(lg.RateLimit(tpm=1000, tokens=by_n))(rec)

    async def spam() -> None:
        for _ in range(200):
            await guarded(50)
            await asyncio.sleep(0.1)

    first = asyncio.create_task(guarded(900))
    await asyncio.sleep(0)
    small = asyncio.create_task(spam())
    await asyncio.sleep(0.05)
    big = asyncio.create_task(guarded(800))
    await big
    sizes = [n for _, n, _ in rec.log]
    assert sizes.index(800) <= 3  # only the smalls queued before it went first
    small.cancel()
    await asyncio.gather(first, small, return_exceptions=True)


async def test_waiting_calls_are_served_by_priority_then_round_robin_across_tenants() -> None:
    """Issue 34 #11: behind tenant a's burst, tenant b's high-priority call goes at the next
    room, then the two tenants' backlogs alternate (FIFO within each), one call per room."""
    served = Served()
    guarded = lg.guard(tenant_of, lg.RateLimit(rpm=1, margin=0))(served)
    tasks = [asyncio.create_task(guarded(f"a{i}", tenant="a")) for i in range(4)]
    await asyncio.sleep(1)
    tasks += [asyncio.create_task(guarded(f"b{i}", tenant="b")) for i in range(3)]
    await asyncio.sleep(1)
    tasks.append(asyncio.create_task(guarded("b-high", tenant="b", priority=1)))
    await asyncio.gather(*tasks)
    assert served.order() == ["a0", "b-high", "a1", "b0", "a2", "b1", "a3", "b2"]
    times = [t for t, _ in served.log]
    assert all(60 <= b - a <= 60 + 2 * SLACK for a, b in itertools.pairwise(times))  # never idle


async def test_a_new_head_that_fits_now_is_admitted_at_once() -> None:
    """A higher-priority call that fits while the head waits for room for a bigger one is
    admitted when it joins, not when the head's room comes (the driver asks for the new head)."""
    served = Served()
    layer = lg.RateLimit(tpm=1000, tokens=lambda name, n, **_: n, margin=0)
    guarded = lg.guard(tenant_of, layer)(served)
    await guarded("first", 900, tenant="a")
    big = asyncio.create_task(guarded("big", 800, tenant="a"))
    await asyncio.sleep(5)
    assert layer.statistics().waiting == 1
    await guarded("urgent", 50, tenant="b", priority=1)
    assert served.log[-1] == (5, "urgent")
    await big
    assert served.log[-1][1] == "big" and served.log[-1][0] == pytest.approx(60, abs=2 * SLACK)
    assert at_baseline(layer)


async def test_a_large_request_waits_one_turn_of_another_tenant_not_for_ever() -> None:
    """Head of line across tenants: another tenant's stream of small calls takes its turn, but
    never the large call's place at the head, so the large one goes within a turn or two."""
    served = Served()
    guarded = lg.guard(tenant_of, lg.RateLimit(tpm=1000, tokens=lambda name, n, **_: n))(served)

    async def spam() -> None:
        for i in range(200):
            await guarded(f"small{i}", 50, tenant="b")
            await asyncio.sleep(0.1)

    first = asyncio.create_task(guarded("first", 900, tenant="a"))
    await asyncio.sleep(0)
    small = asyncio.create_task(spam())
    await asyncio.sleep(0.25)
    await guarded("big", 800, tenant="a")
    assert served.order().index("big") <= 4  # first, two smalls that fit, one turn of b
    small.cancel()
    await asyncio.gather(first, small, return_exceptions=True)


async def test_a_cancelled_high_priority_head_wakes_the_next() -> None:
    """Cancelling the high-priority head leaves no hole: the next waiter takes the room."""
    served = Served()
    layer = lg.RateLimit(rpm=1, margin=0)
    guarded = lg.guard(tenant_of, layer)(served)
    await guarded("first", tenant="a")
    low = asyncio.create_task(guarded("low", tenant="a"))
    await asyncio.sleep(1)
    high = asyncio.create_task(guarded("high", tenant="b", priority=1))
    await asyncio.sleep(1)
    high.cancel()
    await low
    assert served.order() == ["first", "low"]
    assert served.log[-1][0] == pytest.approx(60, abs=2 * SLACK) and at_baseline(layer)


async def test_a_priority_that_is_not_an_int_fails_that_call_alone() -> None:
    """A call whose priority is not an int fails with TypeError before it waits."""
    layer = lg.RateLimit(rpm=1)
    guarded = lg.guard(tenant_of, layer)(Served())
    await guarded("first")
    with pytest.raises(TypeError, match="priority .*RateLimit.* must be an int"):
        await guarded("bad", priority="high")
    assert at_baseline(layer)


async def test_keys_have_independent_quotas() -> None:
    """key= gives each key its own quota: one tenant's burst does not delay another."""
    rec = Recorder(latency=0)

    async def fn(tenant: str) -> None:
        await rec(1)

    layer = lg.RateLimit(rpm=2, key=lambda tenant: tenant)
    guarded = lg.guard(layer)(fn)
    await asyncio.gather(*(guarded("a") for _ in range(3)), guarded("b"), guarded("b"))
    times = sorted(t for t, *_ in rec.log)
    assert times[:4] == [0, 0, 0, 0] and times[4] >= 60


# --- reconciliation and refunds ---------------------------------------------------------------


async def test_unused_tokens_are_given_back_and_extra_charged() -> None:
    """The reservation is reconciled to actual usage: waiters are woken when room frees. (A
    quota paced as a sliding log; the default ``refill="auto"`` keeps what a server that says
    nothing charged until probes show what it counts: ``test_silent_charge.py``.)"""
    rec = Recorder(latency=1)
    layer = lg.RateLimit(tpm=1000, tokens=by_n, refill="window")
    guarded = lg.guard(layer)(rec)
    first = asyncio.create_task(guarded(900, used=100))  # reserves 900, uses 100
    await asyncio.sleep(0)
    assert layer.statistics().reserved_tokens == 900
    await guarded(800)  # fits as soon as the first call reconciles, after 1 s
    assert rec.log[1][0] == 1
    await first
    await guarded(50, used=150)  # charged extra: 100 + 800 + 150 > 1000
    assert layer.statistics().tokens_available == 0
    assert at_baseline(layer)


async def test_charge_reserved_keeps_the_estimate() -> None:
    """charge="reserved" never reconciles: what was reserved at admission stays charged, as
    OpenAI-style providers count max_tokens (a quota paced as a sliding log: no factor)."""
    layer = lg.RateLimit(tpm=1000, tokens=by_n, charge="reserved", refill="window")
    await lg.guard(layer)(Recorder())(900, used=100)
    assert layer.statistics().tokens_available == 100


async def test_margin_keeps_each_admission_counted_past_the_window() -> None:
    """With margin=2 the next request of a full rpm quota waits 62 s, not 60 s: the provider,
    counting a little later than llmguard admitted, has surely let the old one go by then."""
    rec = Recorder()
    guarded = lg.guard(lg.RateLimit(rpm=2, margin=2))(rec)
    for n in range(3):
        await guarded(n)
    assert [when for when, *_ in rec.log] == [0, 0.5, pytest.approx(62, abs=0.01)]


async def test_admission_error_below_is_refunded() -> None:
    """An inner AdmissionError means the provider never saw the call: the tokens come back
    (the two answered keep what was reserved: the estimate times ``OPENING``, as the server
    said nothing of what it counts). The third arrives while the second waits below and the
    token quota could not surely hold both (``queued.roomy``): it reserved as it arrived."""
    layer = lg.RateLimit(rpm=10, tpm=1000, tokens=by_n)
    inner = lg.ConcurrencyLimit(1, max_queue=1)

    guarded = lg.guard(layer, inner)(Recorder(latency=10))
    tasks = [asyncio.create_task(guarded(250)) for _ in range(3)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], lg.QueueFull)
    s = layer.statistics()
    assert s.refunds == 1 and s.requests_available == 8
    assert s.tokens_available == 1000 - 2 * math.ceil(250 * OPENING)
    assert at_baseline(layer)


# --- provider feedback ---------------------------------------------------------------------


@pytest.mark.parametrize("header, pause", [("7", 7.0), (None, DEFAULT_PAUSE)])
async def test_429_pauses_all_admissions_until_retry_after(header, pause) -> None:
    """A rate-limit error pauses the key for Retry-After (DEFAULT_PAUSE when absent), under
    the default ``refill="auto"`` too. There a 429 also supposes a clock-minute window, probed
    at the wall clock's next minute (test_pacing): the wall clock follows virtual time from a
    minute's start (``virtual_wall_clock``), so that minute is the same in every run."""
    headers = {"retry-after": header} if header else {}
    llm = FakeLLM([RateLimited("slow down", status_code=429, headers=headers)])
    layer = lg.RateLimit(rpm=100)
    guarded = lg.guard(layer)(llm.send_message)
    with virtual_wall_clock():
        with pytest.raises(RateLimited):
            await guarded("a")
        assert layer.statistics().paused_for == pause and layer.statistics().rate_limited == 1
        assert "clock-minute window supposed" in layer.statistics().shape
        loop = asyncio.get_running_loop()
        start = loop.time()
        await guarded("b")
    assert pause <= loop.time() - start < pause + 0.01
    assert at_baseline(layer)


class CountingBackend(MemoryBackend):
    """The in-memory backend, failing the call if the line re-checks without end."""

    reserves = 0

    async def reserve(self, key, quotas, tokens):
        self.reserves += 1
        assert self.reserves < 50, "the line re-checks a pause without the clock moving on"
        return await super().reserve(key, quotas, tokens)


async def test_pause_ending_between_clock_ticks_admits_after_it() -> None:
    """Regression (found by test_chaos): a Retry-After whose end is a float sliver past a tick
    of the loop clock (5.2 + 0.799559 = 5.9995590000000005 on a microsecond clock) waited 1e-16 s
    and re-checked at the same clock reading forever, a busy loop. The wait now carries SLACK."""
    await asyncio.sleep(5.2)
    llm = FakeLLM([RateLimited("slow down", status_code=429, headers={"retry-after": "0.799559"})])
    backend = CountingBackend()
    layer = lg.RateLimit(rpm=100, backend=backend)
    guarded = lg.guard(layer)(llm.send_message)
    with pytest.raises(RateLimited):
        await guarded("a")
    assert await guarded("b") == "echo: b"
    assert backend.reserves < 5 and at_baseline(layer)
    window = Window((Quota(10, 60.0, False),))
    window.paused_until = 5.2 + 0.799559
    assert window.wait(5.999559, 1) >= SLACK


async def test_observe_headers_tightens_but_never_loosens() -> None:
    """Provider headers cap headroom until their reset; they never raise it above the quota."""
    rec = Recorder(latency=0)
    layer = lg.RateLimit(rpm=100, tpm=10_000, tokens=by_n)
    guarded = lg.guard(layer)(rec)
    layer.observe_headers({"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "6m0s",
                           "x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "20ms"})
    assert layer.statistics().requests_available == 1
    await guarded(10)
    await guarded(10)
    assert rec.log[1][0] >= 360
    layer.observe_headers({"x-ratelimit-remaining-requests": "10000", "x-ratelimit-reset-requests": "1s"})
    assert layer.statistics().requests_available == 99  # the quota, minus the call at 360 s


class AnswerHeaders:
    """A transport stand-in below the layer: writes each attempt's response headers, then the
    answer's or the error's (``fail``) goes back up."""

    def __init__(self, remaining: int, fail: bool = False) -> None:
        self.remaining, self.fail = remaining, fail

    async def __call__(self, call: lg.Call, call_next: lg.Handler):
        assert call.response_headers is None  # the layer cleared an earlier attempt's
        result = await call_next(call)
        call.response_headers = {"x-ratelimit-remaining-requests": str(self.remaining),
                                 "x-ratelimit-reset-requests": "60s"}
        self.remaining -= 1
        if self.fail:
            raise RuntimeError("upstream error with rate-limit headers")
        return result


@pytest.mark.parametrize("fail", [False, True])
async def test_the_layer_reads_the_attempts_response_headers_itself(fail) -> None:
    """RateLimit shows itself each attempt's response headers (``observes_inline``: no frame of
    compose's): after a success or an error, headers written below it cap the headroom."""
    layer = lg.RateLimit(rpm=100)
    headers = AnswerHeaders(remaining=5, fail=fail)
    guarded = lg.guard(layer, headers)(Recorder(latency=0))
    for _ in range(2):
        try:
            await guarded(1)
        except RuntimeError:
            assert fail
    assert layer.statistics().requests_available == 4 and at_baseline(layer)



@pytest.mark.parametrize("names, nothing", [
    ((), True), (("Content-Type", "Date", "Server"), True),
    (("Date", "X-RateLimit-Remaining-Requests"), False),
    (("anthropic-ratelimit-tokens-remaining",), False), (("Retry-After",), False),
    (("x-ms-retry-after-ms",), False), (("OpenAI-Processing-Ms",), False),
    (("x-litellm-response-duration-ms",), False), (("x-ratelimit-whatever",), False)])
def test_an_answer_that_names_nothing_read_is_told_from_its_names(names, nothing) -> None:
    """``says_nothing``: no name of a rate limit, a server's time or a retry-after, any case
    (the answer is then not read name by name); a name merely containing one errs on reading,
    and what is not a mapping of names is read as it is."""
    from multidict import CIMultiDict

    from llmguard._admission.ratelimit.headers import says_nothing

    assert says_nothing(CIMultiDict((name, "1") for name in names)) is nothing
    assert says_nothing(dict.fromkeys(names, "1")) is nothing
    assert says_nothing([("x", "y")]) is False and says_nothing(None) is False


@pytest.mark.parametrize("refill", ["auto", "window"])
async def test_headers_after_answers_that_said_nothing_are_read(refill) -> None:
    """An upstream's answers without a header read here teach nothing but that (a learned
    quota may be probed, ``unsaid``); the first answer that says something is read in full."""
    layer = lg.RateLimit(rpm=100, refill=refill)
    from multidict import CIMultiDict

    said = [CIMultiDict({"Content-Type": "application/json"})] * 3 + [CIMultiDict(
        {"Content-Type": "application/json", "X-RateLimit-Remaining-Requests": "5",
         "X-RateLimit-Reset-Requests": "60s"})]

    async def answer(call: lg.Call, call_next: lg.Handler):
        result = await call_next(call)
        call.response_headers = said.pop(0)
        return result

    guarded = lg.guard(layer, answer)(Recorder(latency=0))
    for _ in range(3):
        await guarded(1)
    shape = layer.backend._windows[None].shape
    assert (shape and shape.quiet) is (True if refill == "auto" else None)  # heard nothing
    assert layer.statistics().requests_available == 97
    await guarded(1)
    if refill == "auto":  # heard: the server is read from now on, never probed as silent
        assert shape.quiet is False
    else:  # capped to what it says is left (read against ours) until its reset
        assert layer.statistics().requests_available <= 5
    assert at_baseline(layer)

@pytest.mark.parametrize(
    "text, seconds",
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5),
     ("bogus", None), (None, None), ("5x", None)],
)
def test_parse_duration(text, seconds) -> None:
    """OpenAI's reset durations parse to seconds; garbage yields None."""
    assert parse_duration(text) == seconds


# --- waiting bounds and cancellation -------------------------------------------------------------


async def test_max_wait_raises_admission_timeout_naming_the_limit() -> None:
    """Waiting past max_wait raises AdmissionTimeout saying the quota and what to change."""
    layer = lg.RateLimit(rpm=1, max_wait=5)
    guarded = lg.guard(layer)(Recorder(latency=0))
    await guarded(1)
    with pytest.raises(lg.AdmissionTimeout, match="waited 5 s.*1 requests per minute.*raise max_wait"):
        await guarded(1)
    assert layer.statistics().timed_out == 1 and at_baseline(layer)


@pytest.mark.parametrize("point", ["head", "behind", "in_call"])
async def test_cancellation_at_each_await_point_returns_to_baseline(point) -> None:
    """Cancel at the head of the line, behind it, or in the provider: nothing leaks, the
    line moves on and the next call proceeds."""
    rec = Recorder(latency=5)
    layer = lg.RateLimit(rpm=1, max_wait=1000)
    guarded = lg.guard(layer)(rec)
    first = asyncio.create_task(guarded(1))
    await asyncio.sleep(0)
    head = asyncio.create_task(guarded(1))
    await asyncio.sleep(0)
    behind = asyncio.create_task(guarded(1))
    await asyncio.sleep(1)
    victim = {"head": head, "behind": behind, "in_call": first}[point]
    victim.cancel()
    await asyncio.gather(first, head, behind, return_exceptions=True)
    assert victim.cancelled()
    assert at_baseline(layer)
    assert layer.statistics().timed_out == 0
    assert len(rec.log) == (3 if point == "in_call" else 2)  # every survivor got through
    await guarded(1)


async def test_stream_holds_its_reservation_until_the_end() -> None:
    """A streamed answer keeps its reservation until the stream ends."""
    async def gen(n: int):
        for i in range(3):
            await asyncio.sleep(1)
            yield i

    layer = lg.RateLimit(tpm=100, tokens=by_n)
    chunks = [c async for c in lg.guard(layer)(gen)(40)]
    assert chunks == [0, 1, 2] and at_baseline(layer)


def test_statistics_and_repr_outside_a_loop() -> None:
    """statistics() and repr work without a running loop (for metrics exporters)."""
    layer = lg.RateLimit(rpm=10, tpm=500)
    s = layer.statistics()
    assert (s.requests_available, s.tokens_available, s.paused_for) == (10, 500, 0.0)
    assert "10 requests per minute, 500 tokens per minute" in repr(layer)


# --- the window arithmetic, directly ---------------------------------------------------------


def test_window_wait_adjust_and_expiry() -> None:
    """Pure: the wait is until enough old entries leave; reconcile and refund open room."""
    window = Window((Quota(2, 60.0, False), Quota(100, 60.0, True)))
    assert window.wait(0, 60) == 0
    a = window.add(0, 60)
    assert window.wait(10, 50) == pytest.approx(50 + SLACK)
    window.adjust(10, a, 20)  # reconciled down
    assert window.wait(10, 50) == 0
    b = window.add(10, 50)
    assert window.wait(20, 1) == pytest.approx(40 + SLACK)  # rpm=2 is full
    window.adjust(20, b, 0, live=0)  # refunded
    assert window.wait(20, 80) == 0 and window.available(20, True) == 80
    assert window.wait(61, 100) == 0 and window.available(61, False) == 2


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0, 3), st.integers(0, 50), st.integers(-1, 60),
                                st.integers(0, 50)), min_size=1, max_size=120))
def test_a_folded_log_counts_at_least_everything_in_the_window_and_at_most_a_slot_more(
        steps) -> None:
    """Property: a log folded into per-slot counts (here after 8 entries) never counts less
    than the exact sliding window holds (so it never admits past the quota), and never more
    than a window one slot longer holds, through admissions, reconciliations and refunds (of
    folded entries too). Its size stays bounded by the fold."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "FOLD_AT", 8)
        folding(steps)


@settings(max_examples=40, deadline=None)
@given(rpm=st.integers(1, 30), gaps=st.lists(st.floats(0, 2), min_size=1, max_size=150))
def test_a_folded_window_never_admits_more_than_the_quota_in_any_window(rpm, gaps) -> None:
    """Property: with folding after 8 entries, admissions taken whenever the window says there
    is room never exceed ``rpm`` in any 60 s window."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "FOLD_AT", 8)
        window, now, admitted = Window((Quota(rpm, 60.0, False),)), 0.0, []
        for gap in gaps:
            now += gap
            if window.take(now, 1) is not None:
                admitted.append(now)
    for t in admitted:
        assert sum(1 for s in admitted if t - 60 < s <= t) <= rpm


def folding(steps) -> None:
    requests, tokens = Log(Quota(10**9, 12.0, False)), Log(Quota(10**9, 12.0, True))
    now, entries = 100.0, []
    for gap, size, pick, new in steps:
        now += gap
        entry = Entry(now, size)
        entries.append(entry)
        requests.add(now, entry)
        tokens.add(now, entry)
        if 0 <= pick < len(entries):  # reconcile (or refund, for even sizes) an older one
            old = entries[pick]
            live = 0 if new % 2 == 0 and old.live else old.live
            for log in (requests, tokens):
                log.adjust(now, old, new if live else 0, live)
            old.tokens, old.live = (new, live) if live else (0, 0)
        for log in (requests, tokens):
            log.expire(now)
            exact = sum(log.weight(e) for e in entries if e.time > now - log.span)
            longer = sum(log.weight(e) for e in entries if e.time > now - log.span - log.slot)
            assert exact <= log.used <= longer
            assert len(log.entries) <= 8 + 1 + sum(1 for e in entries if e.time // log.slot
                                                   == now // log.slot) + log_module.SLOTS


@settings(max_examples=50, deadline=None)
@given(
    rpm=st.integers(1, 20),
    tpm=st.integers(100, 2000),
    calls=st.lists(st.tuples(st.floats(0, 200), st.integers(1, 100), st.integers(0, 100),
                             st.booleans(), st.sampled_from("ab"), st.integers(-1, 1)),
                   min_size=1, max_size=60),
)
def test_admitted_within_any_window_never_exceed_the_quota(rpm, tpm, calls) -> None:
    """Property: for any arrivals, sizes, usage, tenants, priorities and cancellations, the
    requests and the tokens (as actually used) that reached the provider in any 60 s window
    stay within rpm and tpm."""
    async def scenario() -> None:
        rec = Recorder(latency=0.5)
        layer = lg.RateLimit(rpm=rpm, tpm=tpm, tokens=lambda n, **_: n)

        async def provider(n, used=None, **_):
            return await rec(n, used)

        guarded = lg.guard(tenant_of, layer)(provider)

        async def one(i, start, n, used, cancel, tenant, priority):
            await asyncio.sleep(start)
            task = asyncio.current_task()
            if cancel:
                asyncio.get_running_loop().call_later(30, task.cancel)
            used = min(used, n)  # usage never above the estimate (see the extra-charge test)
            try:
                await guarded(n, used=used, tenant=tenant, priority=priority)
            except asyncio.CancelledError:
                pass

        await asyncio.gather(*(one(i, *c) for i, c in enumerate(calls)))
        assert at_baseline(layer)
        for t, *_ in rec.log:
            inside = [used for s, _, used in rec.log if t - 60 < s <= t]
            assert len(inside) <= rpm
            assert sum(inside) <= tpm

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_rps_and_rpm_apply_together() -> None:
    """rps=2 with rpm=3: two calls in the first second, the third a second later, the fourth
    only after a minute."""
    rec = Recorder(latency=0)
    guarded = lg.guard(lg.RateLimit(rpm=3, rps=2, margin=0))(rec)
    await asyncio.gather(*(guarded(1) for _ in range(4)))
    times = [round(t) for t, *_ in rec.log]
    assert times == [0, 0, 1, 60]


# --- bounded memory ---------------------------------------------------------------------------


async def test_idle_keys_are_forgotten_so_state_stays_bounded() -> None:
    """With a key per user and users coming and going (10 new ones a second for 10 minutes,
    6,000 keys in all), the in-memory backend keeps only about twice the keys active in the
    last window, never one window per key ever seen."""
    layer = lg.RateLimit(rpm=5, key=lambda user: user)
    guarded = lg.guard(layer)(Recorder(latency=0.5))
    most = 0
    for second in range(600):
        await asyncio.gather(*(guarded(f"user{second * 10 + i}") for i in range(10)))
        most = max(most, layer.backend.tracked_keys)
        await asyncio.sleep(0.5)
    active = 60 * 10  # keys with an admission inside the last 60 s window
    assert most <= 2 * active + 10
    assert layer.backend.tracked_keys <= 2 * active + 10


async def test_a_key_keeps_its_quota_and_pause_while_others_are_swept() -> None:
    """Sweeping never forgets state that still matters: a key at its quota stays at its quota,
    and a paused key stays paused, while hundreds of idle keys around it are dropped."""
    backend = MemoryBackend()
    quotas = (Quota(2, 60.0, False),)
    for _ in range(2):
        await backend.reserve("busy", quotas, 0)
    backend.pause("paused", quotas, 300)
    for i in range(500):  # each is idle a minute later; new keys trigger the sweeps
        await backend.reserve(f"once{i}", quotas, 0)
    await asyncio.sleep(61)
    for i in range(500):
        await backend.reserve(f"later{i}", quotas, 0)
    assert backend.tracked_keys < 700
    wait, ticket = await backend.reserve("busy", quotas, 0)
    assert ticket is not None  # its two entries expired with the window: room again
    assert (await backend.reserve("paused", quotas, 0))[1] is None
    assert backend.headroom("paused", quotas)[2] > 200


def test_window_idle_only_when_nothing_applies() -> None:
    """Window.idle: entries inside the window, a pause or a live cap keep it; none of them left
    means it equals a fresh window."""
    window = Window((Quota(10, 60.0, False),))
    assert window.idle(0.0)
    window.add(0.0, 1)
    assert not window.idle(59.0) and window.idle(60.0)
    window.paused_until = 100.0
    assert not window.idle(99.0) and window.idle(100.0)
    window.cap(100.0, False, 3, 5.0)
    assert not window.idle(104.0) and window.idle(105.0)


async def test_reconcile_after_the_window_was_swept_is_harmless() -> None:
    """A call that outlives a 1 s (rps) window may find its key swept when it settles: the
    reconciliation and refund are no-ops instead of a KeyError."""
    backend = MemoryBackend()
    quotas = (Quota(1, 1.0, False),)
    _, ticket = await backend.reserve("slow", quotas, 5)
    await asyncio.sleep(2)
    for i in range(200):  # enough new keys to sweep the idle "slow" window
        await backend.reserve(f"k{i}", quotas, 0)
    assert backend.tracked_keys == 200  # the 200 new keys: "slow" was forgotten
    backend.reconcile("slow", ticket, 7)
    backend.refund("slow", ticket)
    assert (await backend.reserve("slow", quotas, 0))[1] is not None


async def test_queueing_inside_the_limiter_keeps_provider_windows_within_the_quota() -> None:
    """In the recommended order (RateLimit outside ConcurrencyLimit) a call admitted at t=0 may
    wait for a slot and reach the provider at t=50. It is counted from then, not from its
    admission, so no 60 s window at the provider holds more than rpm=3 requests (counting from
    admission let five through within (2, 62]; found by test_chaos)."""
    arrivals: list[float] = []

    async def provider(latency: float) -> None:
        arrivals.append(asyncio.get_running_loop().time())
        await asyncio.sleep(latency)

    guarded = lg.guard(lg.RateLimit(rpm=3, margin=0), lg.ConcurrencyLimit(1))(provider)
    first = [asyncio.create_task(guarded(latency)) for latency in (50, 1, 1)]
    await asyncio.sleep(60)
    await asyncio.gather(*first, *(guarded(1) for _ in range(3)))
    assert arrivals == pytest.approx([0, 50, 51, 60, 110, 111], abs=0.01)
    assert max(sum(t - 60 < s <= t for s in arrivals) for t in arrivals) <= 3


@pytest.mark.parametrize("order", ["lifo", "random"])
async def test_cancelling_waiters_out_of_order_does_not_scan_the_line(order, monkeypatch) -> None:
    """Issue 21 #7: a waiter that leaves the line (cancelled newest-first or at random) is
    taken out without comparing it to the others (``deque.remove`` made N waiters cost N²/2
    comparisons); the survivor is still admitted and the layer returns to baseline."""
    import random

    class CountingFuture(asyncio.Future):
        compares = 0

        def __eq__(self, other):
            CountingFuture.compares += 1
            return self is other

        __hash__ = asyncio.Future.__hash__

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "create_future", lambda: CountingFuture(loop=loop))
    layer = lg.RateLimit(rpm=1)
    guarded = lg.guard(layer)(FakeLLM(latency=0))
    await guarded("first")
    n = 2000
    tasks = [asyncio.create_task(guarded(f"q{i}")) for i in range(n)]
    await asyncio.sleep(0)
    assert layer.statistics().waiting == n
    doomed = tasks[1:][::-1] if order == "lifo" else random.Random(2).sample(tasks[1:], n - 1)
    for task in doomed:
        task.cancel()
        await asyncio.sleep(0)
    await asyncio.gather(*doomed, return_exceptions=True)
    assert CountingFuture.compares <= n // 10
    # Leavers behind a head that still waits do not pile up in the arrival order either.
    (queue,) = layer._line.lines.values()
    held = sum(len(fifo) for fifos in queue.fair._classes.values() for fifo in fifos.values())
    assert len(queue.waiters) == 1 and held <= 2 * len(queue.waiters) + 32
    await tasks[0]
    assert at_baseline(layer)
