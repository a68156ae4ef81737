"""The real-shaped simulated servers of llmguard.testing: what they count, when, and what they
answer (the composition suite relies on these contracts)."""

from __future__ import annotations

import asyncio

import pytest

from llmguard.testing import (FixedWindowServer, InputOutputBucketServer, LoopbackServer,
                              ProxyWindowServer, RateLimited, TokenBucketServer,
                              virtual_wall_clock)

MESSAGES = [{"role": "user", "content": "hello"}]


async def test_fixed_window_counts_at_arrival_and_resets_at_the_clock_boundary() -> None:
    """rpm=2 per clock minute: two requests at t=50 fill the window, a third is answered 429
    with Retry-After to the boundary (10 s) and x-ratelimit headers; at t=60 the count is zero
    again, though the first two arrived only 10 s earlier."""
    server = FixedWindowServer(rpm=2, latency=1.0)
    await asyncio.sleep(50)
    await asyncio.gather(*(server.acompletion(messages=MESSAGES) for _ in range(2)))
    with pytest.raises(RateLimited) as info:
        await server.acompletion(messages=MESSAGES)
    headers = info.value.headers
    assert info.value.status_code == 429 and float(headers["retry-after"]) == pytest.approx(9.0)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "9s"
    await asyncio.sleep(9)
    await asyncio.gather(*(server.acompletion(messages=MESSAGES) for _ in range(2)))
    stats = server.statistics()
    assert (stats.arrivals, stats.served, stats.rate_limited) == (5, 4, 1)
    assert stats.peak_window_requests == 3  # by arrival: the refused one counts


async def test_fixed_window_without_retry_after() -> None:
    """``retry_after=False``: the 429 carries no Retry-After (the x-ratelimit headers stay)."""
    server = FixedWindowServer(rpm=1, retry_after=False)
    await server.acompletion(messages=MESSAGES)
    with pytest.raises(RateLimited) as info:
        await server.acompletion(messages=MESSAGES)
    assert "retry-after" not in info.value.headers
    assert "x-ratelimit-reset-requests" in info.value.headers


async def test_token_bucket_charges_max_tokens_up_front_and_refills_continuously() -> None:
    """tpm=1000: a request of max_tokens=400 takes its prompt plus 400 at admission, whatever it
    outputs; after two, a third waits (Retry-After) until the bucket refilled its shortfall, at
    1000/60 tokens per second, and then fits."""
    server = TokenBucketServer(tpm=1000, latency=0.0, output_tokens=5)
    charge = server.charge(messages=MESSAGES, max_tokens=400)
    assert charge > 400
    for _ in range(2):
        await server.acompletion(messages=MESSAGES, max_tokens=400)
    with pytest.raises(RateLimited) as info:
        await server.acompletion(messages=MESSAGES, max_tokens=400)
    wait = float(info.value.headers["retry-after"])
    assert wait == pytest.approx((3 * charge - 1000) / (1000 / 60), abs=0.01)
    await asyncio.sleep(wait)
    await server.acompletion(messages=MESSAGES, max_tokens=400)
    assert server.statistics().rate_limited == 1


async def test_a_request_cancelled_after_arrival_is_recorded() -> None:
    """A caller that gives up on a request the server already admitted (charged) shows up in
    ``cancelled`` and ``cancelled_after_arrival``; one refused with 429 does not."""
    server = FixedWindowServer(rpm=1, latency=10.0)
    task = asyncio.ensure_future(server.acompletion(messages=MESSAGES))
    await asyncio.sleep(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RateLimited):
        await server.acompletion(messages=MESSAGES)
    assert server.cancelled == [(0.0, 3.0)]
    assert server.statistics().cancelled_after_arrival == 1


async def test_a_queueing_proxy_counts_a_request_in_the_minute_a_worker_takes_it() -> None:
    """``workers=1``, 1 s each, rpm 4 (3 a minute): five sent at :58 queue; the first two are
    taken at :58 and :59, the rest from :60 on, so the minute from :60 has counted three when
    the sixth, sent at :61 behind them, is taken at :63: refused. Counted at arrival, the
    first three would have filled the old minute and the sixth would pass."""
    loop = asyncio.get_running_loop()
    with virtual_wall_clock(1_800_000_000 + 58 - loop.time()):
        server = ProxyWindowServer(rpm=4, latency=1.0, capacity=1, workers=1)
        assert server.phase() == pytest.approx(58)
        start = loop.time()
        first = [asyncio.ensure_future(server.acompletion(messages=MESSAGES)) for _ in range(5)]
        await asyncio.sleep(3)
        sixth = asyncio.ensure_future(server.acompletion(messages=MESSAGES))
        results = await asyncio.gather(*first, sixth, return_exceptions=True)
    refused = [i for i, r in enumerate(results) if isinstance(r, RateLimited)]
    assert refused == [5], results
    assert [round(a.at - start) for a in server.arrivals] == [0, 1, 2, 3, 4, 5]  # when taken
    with pytest.raises(ValueError, match="workers"):
        ProxyWindowServer(rpm=4, workers=0)


def test_the_new_server_options_reject_bad_input_by_name() -> None:
    with pytest.raises(ValueError, match='reports must be "admitted" or "answered"'):
        ProxyWindowServer(rpm=4, reports="bogus")
    with pytest.raises(TypeError, match="refunds_output must be True"):
        InputOutputBucketServer(output_tpm=100, refunds_output="no")
    with pytest.raises(ValueError, match="shape must be 'bucket'.*or 'fixed'"):
        InputOutputBucketServer(output_tpm=100, shape="sliding")


async def test_a_fixed_window_input_output_server_counts_per_window() -> None:
    """``InputOutputBucketServer(shape="fixed")``: input and output tokens counted per window
    from ``epoch``, unused output given back within the window, a 429 (with every header)
    once a part is used up, its reset the next boundary; all afresh at the boundary."""
    server = InputOutputBucketServer(input_tpm=1_000, output_tpm=500, latency=1.0,
                                     output_tokens=50, shape="fixed", window=60.0)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(20)
    prompt = [{"role": "user", "content": "word " * 40}]
    headers: list[dict[str, str]] = []
    server.on_headers.append(headers.append)
    answers = await asyncio.gather(*(server.amessages(messages=prompt, max_tokens=200)
                                     for _ in range(2)), return_exceptions=True)
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert headers[-1]["anthropic-ratelimit-output-tokens-remaining"] == str(500 - 2 * 50)
    used = answers[0]["usage"]["input_tokens"]
    assert headers[-1]["anthropic-ratelimit-input-tokens-remaining"] == str(1_000 - 2 * used)
    later = [await server.amessages(messages=prompt, max_tokens=200) for _ in range(5)]
    with pytest.raises(RateLimited) as refused:
        await server.amessages(messages=prompt, max_tokens=200)  # 350 used: no room for 200
    assert refused.value.status_code == 429 and len(later) == 5
    assert float(refused.value.headers["retry-after"]) == pytest.approx(60 - loop.time(), abs=0.01)
    await asyncio.sleep(60 - loop.time())
    await server.amessages(messages=prompt, max_tokens=200)  # a new window: afresh
    assert server.statistics().rate_limited == 1


def test_ideal_time_is_the_quota_bound_schedule() -> None:
    """The ideal for N equal requests: fixed windows admit a window's worth at each boundary;
    buckets admit their capacity at once, then at the refill rate; plus one service time."""
    fixed = FixedWindowServer(rpm=60, latency=2.0)
    assert fixed.ideal_time(60) == 2.0
    assert fixed.ideal_time(150) == 122.0
    assert fixed.ideal_time(60, start=30.0) == 2.0  # seconds from start: all in the first window
    assert fixed.ideal_time(61, start=30.0) == 32.0  # the 61st waits for the boundary at 60
    bucket = TokenBucketServer(rpm=60, tpm=6000, latency=1.0)
    assert bucket.ideal_time(120, tokens=100) == 61.0
    assert bucket.ideal_time(60, tokens=200) == pytest.approx(1.0 + (12_000 - 6000) / 100)


async def test_a_queueing_proxys_ideal_is_bound_by_its_workers_as_well_as_its_minutes() -> None:
    """4 workers, 2 s each, 59 a minute: 90 from :40 take 46 s (the workers' bound: the
    minutes never bind, as 40 are taken before :60); from :00, 59 are taken by :28, the
    workers then idle until :60 and take the other 31 by :74: 76 s, more than either bound
    (the quotas' 62 s, the workers' 46 s)."""
    loop = asyncio.get_running_loop()
    with virtual_wall_clock(1_800_000_000 + 40 - loop.time()):
        server = ProxyWindowServer(rpm=60, latency=2.0, workers=4)
        start = loop.time()
        assert server.phase() == pytest.approx(40)
        assert server.service_time(90) == 46.0
        assert server.ideal_time(90, start=start) == pytest.approx(46.0)
        assert server.ideal_time(90, start=start + 20) == pytest.approx(76.0)
        assert FixedWindowServer.ideal_time(server, 90, start=start + 20) == pytest.approx(62.0)
    assert ProxyWindowServer(rpm=60, latency=2.0).service_time(90) == 2.0  # all at once


@pytest.mark.looptime(False)
async def test_loopback_server_speaks_openai_to_the_sdk() -> None:
    """Over a real socket the openai SDK gets a chat.completion with usage and the x-ratelimit
    headers of its admission, and a 429 as ``openai.RateLimitError`` with Retry-After."""
    openai = pytest.importorskip("openai")
    server = FixedWindowServer(rpm=1, window=30.0, latency=0.01)
    async with LoopbackServer(server) as http:
        client = openai.AsyncOpenAI(base_url=http.base_url, api_key="test", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=8)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        assert raw.parse().usage.completion_tokens == 8
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8)
        assert float(info.value.response.headers["retry-after"]) > 0
        await client.close()
    assert http.requests == 2 and server.statistics().arrivals == 2


async def test_a_streamed_message_leaves_the_next_answers_headers_as_of_their_end() -> None:
    """A stream's headers go out as it starts; an answer served after it in the same task goes
    with headers as of its end, its unused output given back (the stream's mark stayed set in
    the task, and ``acompletion`` answered with the headers of its admission)."""
    from llmguard.testing._servers import admission_headers

    server = InputOutputBucketServer(output_tpm=1_000, output_tokens=10, latency=1.0)
    await server.amessages(messages=[{"role": "user", "content": "hi"}], max_tokens=500,
                           stream=True)
    await server.acompletion(messages=[{"role": "user", "content": "hi"}], max_tokens=500)
    sent = admission_headers.get()
    assert sent == server.headers(server._now())
