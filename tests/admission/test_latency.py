"""RateLimit's default margin is measured from the send latency: admission to the answer's
headers, less the time the server says it spent (``ratelimit/latency.py``). A strict
sliding-window server never sees more than its quota from a cold client with default settings,
and the margin follows a server that gets slower (and faster again). Virtual time."""

import asyncio
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.latency import (CEILING, FLOOR, Margin, processing_time,
                                                   retime)
from llmguard._admission.ratelimit.quotas import build_quotas
from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import InputOutputBucketServer, SlidingWindowServer, TokenBucketServer
from cold_network import warming


def margin_of(**quotas: Any) -> Margin:
    return Margin(build_quotas(quotas.get("rpm"), quotas.get("rps"), quotas.get("tpm"), None,
                               quotas.get("margin"), "auto"), quotas.get("margin"))


# --- the arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize("headers, seconds", [
    ({"openai-processing-ms": "1500"}, 1.5),
    ({"llm_provider-openai-processing-ms": "20"}, 0.02),
    ({"x-litellm-response-duration-ms": "812.5"}, 0.8125),
    ({"openai-processing-ms": "soon", "x-litellm-response-duration-ms": "40"}, 0.04),
    ({"openai-processing-ms": "-3"}, None),
    ({"openai-processing-ms": "nan"}, None),
    ({"x-ratelimit-remaining-requests": "5"}, None),
    (None, None),
])
def test_the_servers_own_time_is_read_from_its_headers(headers, seconds) -> None:
    """OpenAI's ``openai-processing-ms`` (LiteLLM passes it on prefixed), LiteLLM's own
    duration; an unreadable or negative one is skipped, none is None."""
    assert processing_time(headers) == (None if seconds is None else pytest.approx(seconds))


def test_the_margin_starts_at_half_a_second_a_minute_then_is_the_p99_of_the_samples() -> None:
    """Before any sample: 0.5 s per minute (the cold client's). Then the 99th percentile of
    the last window's samples, rounded up to 10 ms, at least the floor; each quota's window is
    its own plus that (a per-second one's floor scaled to it)."""
    margin = margin_of(rpm=60, rps=2)
    assert margin.seconds == 0.5 and not margin.measured
    assert [q.margin for q in margin.quotas] == [0.5, pytest.approx(0.5 / 60)]
    assert margin.sample(1.0, 0.002)
    assert margin.seconds == FLOOR and margin.measured
    assert [q.margin for q in margin.quotas] == [FLOOR, FLOOR]
    assert [q.window for q in margin.quotas] == [60 + FLOOR, 1 + FLOOR]
    assert margin.sample(2.0, 0.1)  # the p99 of two samples: the larger
    assert margin.seconds == 0.1
    for i in range(97):
        assert not margin.sample(2.0 + i / 100, 0.1)
    assert not margin.sample(3.0, 1.5)  # one outlier in 100: not the p99
    assert margin.seconds == 0.1
    assert margin.sample(3.1, 1.5)  # two in 101: the p99
    assert margin.seconds == 1.5 and margin.quotas[0].window == 61.5


def test_a_sample_counts_for_at_most_the_ceiling() -> None:
    """A round trip of 20 s less the server's time is a wait at the server (a proxy writing
    its answers late), not the way there: the margin is at most ``CEILING``, per-second
    windows included; below it the samples stand."""
    margin = margin_of(rpm=60, rps=2)
    assert margin.sample(1.0, 20.0)
    assert margin.seconds == CEILING
    assert [q.margin for q in margin.quotas] == [CEILING, CEILING]
    fresh = margin_of(rpm=60)
    fresh.sample(1.0, 1.6)  # a cold burst, 0.8 s each way
    assert fresh.seconds == pytest.approx(1.6)


def test_samples_older_than_a_window_are_forgotten_and_without_any_it_starts_again() -> None:
    margin = margin_of(rpm=60)
    start = margin.quotas
    margin.sample(0.0, 2.0)
    assert margin.seconds == 2.0
    margin.sample(30.0, 0.2)
    assert margin.seconds == 2.0  # still in the window
    margin.sample(61.0, 0.2)
    assert margin.seconds == pytest.approx(0.2)
    assert not margin.refresh(90.0)  # the sample of 61.0 is a window old only at 121
    assert margin.refresh(122.0)
    assert margin.quotas is start and margin.seconds == 0.5 and not margin.measured


def test_a_margin_given_is_never_replaced() -> None:
    margin = margin_of(rpm=60, margin=0.3)
    assert not margin.observe({"openai-processing-ms": "1"}, 0.0)
    assert margin.seconds == 0.3 and repr(margin) == "0.3 s (given)"


def test_a_window_retimed_counts_each_admission_over_the_new_window() -> None:
    """A log expires an admission a window plus the new margin after it; a bucket refills at
    limit / (window + margin); what the window holds stays."""
    quotas = build_quotas(2, None, None, None, None, "window")
    window = Window(quotas)
    window.take(0.0, 0)
    window.take(0.0, 0)
    later = Margin(quotas, None)
    later.sample(1.0, 2.0)
    retime(window, later.quotas, 1.0)
    assert window.take(60.6, 0) is None  # 60.5 under the start; 62 now
    assert window.wait(60.6, 0) == pytest.approx(62.0 - 60.6, abs=2e-3)
    assert window.take(62.01, 0) is not None
    buckets = build_quotas(60, None, None, None, None, "continuous")
    bucket_window = Window(buckets)
    faster = Margin(buckets, None)
    faster.sample(0.0, 0.0)
    retime(bucket_window, faster.quotas, 0.0)
    assert bucket_window.tracks[0].rate == pytest.approx(60 / (60 + FLOOR))


def test_other_quotas_are_not_a_new_margin() -> None:
    """A key asked about with different quotas keeps counting its own (nothing retimed)."""
    window = Window(build_quotas(2, None, None, None, None, "window"))
    retime(window, build_quotas(5, None, None, None, 3.0, "window"), 0.0)
    assert window.tracks[0].span == 60.5 and window.tracks[0].limit == 2


# --- against servers -----------------------------------------------------------------------


async def run(server: Any, calls: int, **limits: Any) -> tuple[lg.RateLimit, float]:
    """``calls`` at once through the README's order (Retry, RateLimit, ConcurrencyLimit): the
    layer, and its margin 30 s in."""
    layer = lg.RateLimit(**limits)
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(lg.Retry(attempts=4), layer, lg.ConcurrencyLimit(512))(
        server.acompletion)
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}

    async def margin_later() -> float:
        await asyncio.sleep(30)
        return layer.statistics().margin

    later = asyncio.get_running_loop().create_task(margin_later())
    results = await asyncio.gather(*(guarded(**ask) for _ in range(calls)))
    assert len(results) == calls
    return layer, await later


@pytest.mark.parametrize("cold", [0.2, 0.8])
async def test_a_cold_client_never_puts_a_strict_sliding_window_over_its_quota(cold) -> None:
    """3x the quota at once from a cold client (each of the first burst's requests takes
    ``cold`` seconds to arrive, later ones 10 ms): with default settings the server never sees
    more than ``rpm`` arrivals within its 60 s, and answers no 429. The first burst's answers
    measured the margin (there and back, less the server's time): the next burst waits it."""
    server = SlidingWindowServer(rpm=120, latency=1.0)
    warm_up = warming(server, cold, 0.01, cold + 0.5)
    layer, margin = await run(server, 360, rpm=120)
    await warm_up
    stats = server.statistics()
    assert stats.peak_window_requests <= 120 and stats.rate_limited == 0
    assert margin >= cold  # measured from the first burst
    assert layer.statistics().margin == FLOOR  # a window after the cold ones: warm only


async def test_a_constant_margin_is_not_enough_for_a_slow_cold_start() -> None:
    """Why measured: the old constant (0.5 s) against a cold start of 0.8 s sends the second
    burst before the first one's arrivals left the server's window."""
    server = SlidingWindowServer(rpm=120, latency=1.0)
    warm_up = warming(server, 0.8, 0.01, 1.3)
    await run(server, 360, rpm=120, margin=0.5)
    await warm_up
    assert server.statistics().rate_limited > 0


async def test_the_margin_follows_a_server_that_gets_slower_then_faster() -> None:
    """Steady traffic: the margin is the floor while the network is fast, rises to cover a
    slower one (and the server still never sees more than its quota), and comes back down a
    window after it is fast again."""
    server = SlidingWindowServer(rpm=60, latency=0.5, send_latency=0.005)
    layer = lg.RateLimit(rpm=60)
    server.on_headers.append(layer.observe_headers)
    guarded = lg.guard(layer)(server.acompletion)
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    seen = []

    async def steady(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            await asyncio.gather(*(guarded(**ask) for _ in range(2)))
            seen.append(layer.statistics().margin)

    await steady(70)
    assert layer.statistics().margin == FLOOR
    server.send_latency = 0.4
    await steady(70)
    assert layer.statistics().margin >= 0.4
    assert "measured" in repr(layer)
    server.send_latency = 0.005
    await steady(130)
    assert layer.statistics().margin == FLOOR
    stats = server.statistics()
    assert stats.peak_window_requests <= 60 and stats.rate_limited == 0


async def test_a_server_that_says_nothing_of_its_time_keeps_the_start() -> None:
    """No processing-time header: the round trip includes the generation, so nothing is
    measured; the margin stays 0.5 s a minute."""
    server = TokenBucketServer(rpm=60, latency=3.0)
    server.processing_header = None
    layer, margin = await run(server, 30, rpm=60)
    assert margin == layer.statistics().margin == 0.5 and "start" in repr(layer)


async def test_requests_on_the_way_at_once_are_each_charged_their_own_tokens() -> None:
    """With a send latency many requests are on the way at once: each is charged its own input
    and output reservation when it arrives (the input/output server keeps what it charges per
    request, not in one attribute the next request overwrites)."""
    server = InputOutputBucketServer(rpm=1000, input_tpm=10**6, output_tpm=10**6,
                                     window=10**9, latency=1.0, send_latency=0.1,
                                     output_tokens=10)
    prompts = [{"role": "user", "content": "word " * (10 * (i + 1))} for i in range(20)]
    answers = await asyncio.gather(*(server.amessages(messages=[p], max_tokens=50 + i)
                                     for i, p in enumerate(prompts)))
    now = asyncio.get_running_loop().time()
    inputs = sum(a["usage"]["input_tokens"] for a in answers)
    assert server.quotas["input-tokens"].remaining(now) == 10**6 - inputs
    assert server.quotas["output-tokens"].remaining(now) == 10**6 - 10 * len(prompts)


def test_quotas_set_by_hand_are_kept_as_given() -> None:
    """``limit.quotas = ...`` (a benchmark compressing time): those windows and margins,
    nothing measured from then on."""
    limit = lg.RateLimit(rpm=5)
    quotas = (Quota(5, 1.02, False),)
    limit.quotas = quotas
    assert limit.quotas is quotas and "(given)" in repr(limit)
