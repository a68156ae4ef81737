"""A server that says nothing (no rate-limit header, no 429 while we keep to the quota) is
probed (``_admission.ratelimit.silent``): the decision to probe is a pure function of our
admissions and the clock minute, tested directly; in the README stack with only ``rpm`` given,
a headerless fixed clock-minute window is learned at no 429, a sliding window or a token bucket
costs at most one. All in virtual time."""

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit import apart, silent
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import (FixedWindowServer, SlidingWindowServer, TokenBucketServer,
                              virtual_wall_clock)

MARGIN = 0.05


def window(limit: int = 10) -> Window:
    """One learned RPM quota whose answers came without any header (``unsaid``)."""
    w = Window((Quota(limit, 60.0 + MARGIN, False, learn=True, margin=MARGIN),))
    w.shape.quiet = True
    return w


def burst(w: Window, at: float, n: int) -> list[Any]:
    return [w.add(at, 0) for _ in range(n)]


def test_a_probe_goes_just_after_the_minute_when_a_sliding_window_must_refuse_it() -> None:
    """A burst of the quota at :40 blocks the log until :40 of the next minute: the probe is
    due just after :00 (the clock skew past it), where a sliding window still counts the whole
    burst and a fixed window from :00 has room; nothing is probed where a sliding window has
    room too (a burst at :00, freed at the next :00) or where the log already has room."""
    w = window()
    burst(w, 40.0, 10)
    assert w.take(41.0, 0) is None
    assert w.wait(41.0, 0) == pytest.approx(60.0 + MARGIN - 41.0, abs=2e-3)
    assert w.shape.candidate == 60.0
    assert w.take(60.0, 0) is None  # before the skew: not yet
    probe = w.take(60.0 + MARGIN + 1e-6, 0)
    assert probe is not None and w.shape.probe is probe
    assert w.take(60.2, 0) is None  # one probe at a time

    early = window()
    burst(early, 0.0, 10)
    assert early.take(1.0, 0) is None
    assert silent.due(early, 1.0, 0) is None  # at :00 a sliding window has room again
    assert early.shape.candidate is None

    w = window()
    assert w.take(41.0, 0) is not None and w.shape.probe is None  # room: no probe


def test_a_refused_probe_means_a_sliding_window_and_is_not_counted() -> None:
    """A 429 to the probe: paced as a sliding window from then on, never probed again, and
    the refused probe leaves our log (the server counted none of it)."""
    w = window()
    burst(w, 40.0, 10)
    w.take(41.0, 0)
    probe = w.take(60.1, 0)
    w.refused(60.2, probe, 1.0)
    assert w.shape.kind == "sliding" and "a probe was refused (429)" in w.shape.why
    assert w.tracks[0].log.used == 10
    assert silent.due(w, 61.0, 0) is None


def test_a_served_probe_paces_within_a_bucket_and_the_minute_then_one_beyond_the_bucket() -> None:
    """Served: a fixed window or a bucket that refilled since the burst. Ours then go within
    both (about the 20 a bucket refilled since the burst), and once the bucket is
    dry while the minute has room, one more goes beyond it: served, a fixed window at the
    clock minute is learned; refused, a sliding window."""
    for answer in ("served", "refused"):
        w = window(limit=60)
        for entry in burst(w, 40.0, 60):
            w.adjust(42.0, entry, 0)  # answered
        w.take(42.0, 0)
        probe = w.take(60.1, 0)
        w.adjust(62.1, probe, 0)  # answered: served without a header
        assert w.shape.served and w.shape.kind == "unknown"
        assert "a fixed window or a token bucket" in w.shape.why
        taken = []
        while (entry := w.take(62.1, 0)) is not None and entry is not w.shape.probe:
            taken.append(entry)
        assert 18 <= len(taken) <= 22  # what a bucket refilled since the burst holds
        second = w.shape.probe
        assert second is entry and second is not None
        if answer == "served":
            w.adjust(64.1, second, 0)
            assert w.shape.kind == "fixed" and w.shape.epoch == 60.0
            assert "beyond what a token bucket of the quota holds was served" in w.shape.why
            rest = [w.take(64.1, 0) for _ in range(60)]
            assert sum(e is not None for e in rest) == 60 - 2 - len(taken)
        else:
            w.refused(62.2, second, 1.0)
            assert w.shape.kind == "sliding"


def test_ours_served_beyond_a_minute_s_fixed_window_show_no_such_window() -> None:
    """``apart.overflowed``: ours answered (served, no header) in the clock minute before a
    boundary, each surely counted in it (the margin and the clock skew from each end), at
    our bare estimates over a fixed window's limit: the server counts no such window. Not
    while ours fit at their estimates (whatever we reserved: the factor is a guess), nor
    with the ones over it unanswered, nor with one that may arrive after the boundary."""
    def served(n: int, last: float = 50.0, answer: bool = True) -> Window:
        w = Window((Quota(10_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN),))
        w.shape.quiet = True
        entries = [w.add(40.0, 212) for _ in range(n - 1)] + [w.add(last, 212)]
        for entry in entries if answer else entries[:-1]:
            w.adjust(52.0, entry, 212)  # answered without a header: what it used unknown
        return w

    assert apart.overflowed(served(48), 60.0)  # 48 x 212 = 10,176 > 10,000
    assert not apart.overflowed(served(47), 60.0)  # 9,964: a fixed window admits them
    assert not apart.overflowed(served(48, answer=False), 60.0)
    assert not apart.overflowed(served(48, last=60.0 - MARGIN / 2), 60.0)
    assert not apart.overflowed(served(48), 120.0)  # nothing of ours in that minute


def test_after_a_429_longer_than_a_bucket_refills_a_served_probe_is_a_fixed_window() -> None:
    """A bare 429 at :45 asking 15 s (to the clock minute; a bucket of ours would have asked
    at most the second it takes to refill one request): the refused request is not counted
    (the server counted none of it), no bucket is supposed, so the probe just after the
    minute, served, is a fixed window at once, without a second probe."""
    w = window()
    burst(w, 40.0, 9)
    refused = w.add(45.0, 0)
    w.refused(45.1, refused, 14.9, wall=45.1)
    assert w.tracks[0].log.used == 9 and w.shape.bucketless
    assert w.tracks[0].limit == 9  # (and the 429 after 9 teaches the server admits 9)
    assert w.take(47.0, 0) is None
    probe = w.take(60.1, 0)
    assert probe is not None and w.shape.probe is probe
    w.adjust(62.1, probe, 0)
    assert w.shape.kind == "fixed" and w.shape.epoch == 60.0
    assert "a 429 asked for longer than a bucket refills" in w.shape.why


def test_a_short_bare_429_is_counted_and_keeps_nothing_learned() -> None:
    """A bare 429 asking no longer than a bucket refills (a token quota under-estimated, say):
    the refused request stays counted (uncounted, its retry would meet the same 429 at once)
    and a served probe still has to tell a fixed window from a bucket."""
    w = window()
    burst(w, 40.0, 9)
    refused = w.add(45.0, 0)
    w.refused(45.1, refused, 1.0, wall=45.1)
    assert w.tracks[0].log.used == 10 and not w.shape.bucketless and w.shape.quiet


def test_a_layer_that_reads_no_answer_never_probes() -> None:
    """Without an answer read (nothing said, not even that nothing is said), no probe: the
    log alone paces, never over any window."""
    w = window()
    w.shape.quiet = None
    burst(w, 40.0, 10)
    assert w.take(60.1, 0) is None and w.shape.candidate is None


async def run_stack(server: Any, calls: int, phase: float) -> tuple[float, float, lg.RateLimit,
                                                                     list[dict[str, str]]]:
    """The README stack with only ``rpm=60`` against ``server``, every answer's headers
    read (and kept, to check the server said nothing), started ``phase`` s into a minute."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - loop.time() % 60) % 60)
    heard: list[dict[str, str]] = []
    pipeline = (lg.Pipeline(name="silent").metrics().cache(ttl=300).retry(attempts=4)
                .circuit_breaker().timeout(30).rate_limit(rpm=60).concurrency_limit(32))
    layer = next(x for x in pipeline.layers if isinstance(x, lg.RateLimit))
    server.on_headers += [heard.append, layer.observe_headers]
    send = pipeline.wrap(server.acompletion)
    start = loop.time()
    await asyncio.gather(*(send(messages=[{"role": "user", "content": f"q {i}"}],
                                max_tokens=200) for i in range(calls)))
    return loop.time() - start, server.ideal_time(calls, start=start), layer, heard


def mute(make: Any) -> Any:
    """``make``'s server saying nothing of its limits: no rate-limit header on an answer, a
    bare 429 (its ``openai-processing-ms`` still times the way there: the margin measured)."""
    return make(rpm=60, latency=2.0, rate_limit_headers=False, retry_after=False)


def said(heard: list[dict[str, str]], *words: str) -> list[str]:
    """The rate-limit headers (and retry-afters, unless ``words`` say otherwise) heard."""
    return [name for headers in heard for name in headers
            if any(word in name for word in words or ("ratelimit", "retry"))]


@pytest.mark.parametrize("phase", [0, 40])
async def test_a_headerless_clock_minute_window_is_learned_without_a_429(phase: float) -> None:
    """A fixed clock-minute RPM window that says nothing at all, 3x its quota at once: no
    429, within 1.05x its ideal; from :40 (where the sliding log would wait a whole window
    after each burst: 1.51x) the statistics say it was learned a fixed window, and why."""
    with virtual_wall_clock():
        server = mute(FixedWindowServer)
        wall, ideal, layer, heard = await run_stack(server, 180, phase)
    assert heard and not said(heard)  # the server truly sent no rate-limit header
    assert server.statistics().rate_limited == 0
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
    if phase:
        shape = layer.statistics().shape
        assert shape.startswith("fixed (a request beyond what a token bucket"), shape
        assert "a fixed window starting afresh at each minute" in repr(layer)


@pytest.mark.parametrize("make", [SlidingWindowServer, TokenBucketServer])
async def test_a_headerless_sliding_window_or_bucket_costs_at_most_one_429(make: Any) -> None:
    """The same against a sliding window or a token bucket that says nothing: at most one
    429 (the probe a fixed window would pass), never learned a fixed window, every call
    done near the ideal."""
    with virtual_wall_clock():
        server = mute(make)
        wall, ideal, layer, heard = await run_stack(server, 180, 40)
    assert not said(heard)
    assert server.statistics().rate_limited <= 1
    assert not layer.statistics().shape.startswith("fixed")
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)


async def test_a_server_that_times_nothing_is_told_apart_beyond_the_minute() -> None:
    """A fixed clock-minute window that sends no header at all (not even its own time, so the
    margin stays unmeasured: 0.5 s): a token bucket may refill a whole request while ours are
    on the way, so no request is surely beyond one and the probe beyond the bucket never
    goes. Paced within both shapes from the first served probe on, the minute's count is
    spent while a bucket would still hold one more: that one goes (:mod:`.apart`), the fixed
    window refuses it (the one 429 while learning) and it is learned, paced to the minute
    from then on (it ran 1.51x the ideal paced within both)."""
    with virtual_wall_clock():
        server = mute(FixedWindowServer)
        server.processing_header = None
        wall, ideal, layer, heard = await run_stack(server, 180, 40)
    assert heard and not any(heard)
    assert server.statistics().rate_limited == 1
    assert wall <= 1.05 * ideal
    shape = layer.statistics().shape
    assert shape.startswith("fixed") and "beyond a fixed window, within a token bucket" in shape
