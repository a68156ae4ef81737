"""``virtual_wall_clock``: the wall clock llmguard and the simulated servers read follows the
loop's virtual time from a fixed epoch, so what depends on the time of day (clock-minute
windows, a 429's supposed minute, reset dates) is the same in every run."""

import asyncio
import time

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.headers import parse_reset
from llmguard._core import clock
from llmguard._core.classify import retry_after_from_headers
from llmguard.testing import (DEFAULT_EPOCH, FakeLLM, ProxyWindowServer, RateLimited,
                              virtual_wall_clock)


async def test_the_wall_clock_is_the_epoch_plus_loop_time_and_restored_after() -> None:
    """Inside: epoch + loop time, moving with virtual sleeps; nested pins nest; outside: the
    real time of day again."""
    loop = asyncio.get_running_loop()
    with virtual_wall_clock():
        assert clock.wall() == DEFAULT_EPOCH + loop.time()
        await asyncio.sleep(90)
        assert clock.wall() == DEFAULT_EPOCH + loop.time()
        with virtual_wall_clock(DEFAULT_EPOCH + 40):
            assert clock.wall() % 60 == pytest.approx((40 + loop.time()) % 60)
        assert clock.wall() == DEFAULT_EPOCH + loop.time()
    assert abs(clock.wall() - time.time()) < 5  # the real one (looptime: offset from loop 0)


def test_a_bad_epoch_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="epoch"):
        with virtual_wall_clock(-1):
            pass
    with pytest.raises(TypeError, match="epoch"):
        with virtual_wall_clock("now"):  # type: ignore[arg-type]
            pass


async def test_dates_in_headers_are_read_against_the_pinned_clock() -> None:
    """Anthropic's RFC 3339 reset times and an HTTP-date Retry-After are measured from the
    same wall clock as the servers write them."""
    with virtual_wall_clock():
        await asyncio.sleep(10)  # 08:00:10 UTC on the default epoch's day
        assert parse_reset("2027-01-15T08:00:30Z") == pytest.approx(20)
        assert retry_after_from_headers(
            {"retry-after": "Fri, 15 Jan 2027 08:00:40 GMT"}) == pytest.approx(30)


@pytest.mark.parametrize("phase, retry_after, resumes", [(0, 7, 7.0), (57, 7, 7.0),
                                                        (57, 60, 3.05)])
async def test_a_429s_supposed_clock_minute_is_the_same_in_every_run(phase, retry_after,
                                                                     resumes) -> None:
    """Under the default ``refill="auto"`` a 429 without a reset supposes a clock-minute window
    and probes it once the clocks' skew (0.05 s) past the wall clock's next minute, never
    before a Retry-After shorter than a window ends: 57 s into a minute, a Retry-After of 60
    (LiteLLM's: "within a window") is probed at the minute's start (3.05 s), one of 7 (the
    server's own time) is waited out (7 s), as at a minute's start. With the wall clock pinned,
    each case happens every run, whatever the time of day."""
    llm = FakeLLM([RateLimited("slow down", status_code=429,
                               headers={"retry-after": str(retry_after)})])
    layer = lg.RateLimit(rpm=100)
    guarded = lg.guard(layer)(llm.send_message)
    loop = asyncio.get_running_loop()
    with virtual_wall_clock(DEFAULT_EPOCH + phase - loop.time()):
        with pytest.raises(RateLimited):
            await guarded("a")
        start = loop.time()
        await guarded("b")
    assert resumes <= loop.time() - start < resumes + 0.01


async def test_a_proxy_servers_minutes_follow_the_pinned_clock() -> None:
    """``ProxyWindowServer`` counts per wall-clock minute: pinned 50 s into one, its phase is
    50 s, and after 10 virtual seconds a new minute starts."""
    loop = asyncio.get_running_loop()
    with virtual_wall_clock(DEFAULT_EPOCH + 50 - loop.time()):
        server = ProxyWindowServer(rpm=3)
        assert server.phase() == pytest.approx(50)
        await server.acompletion(messages=[{"role": "user", "content": "hi"}])
        await server.acompletion(messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(RateLimited):  # rpm - 1 = 2 per minute
            await server.acompletion(messages=[{"role": "user", "content": "hi"}])
        await asyncio.sleep(60 - server.phase())
        await server.acompletion(messages=[{"role": "user", "content": "hi"}])
