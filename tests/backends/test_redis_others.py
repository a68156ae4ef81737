"""RedisBackend under ``refill="auto"``: a process learning a clock minute reads the server's
``remaining`` against every process's admissions, not its own alone (``_peek``,
``ratelimit.others``): the server counts them all.

Real Redis and real time (the boundary supposed is the wall clock's): looptime is off. A window
of 2 s; what is asserted is the shape learned, never a timing.
"""

import asyncio

import pytest

from llmguard._admission.ratelimit.others import Others
from llmguard._admission.ratelimit.window import Quota
from llmguard._core import clock
from llmguard.backends.redis import RedisBackend
from llmguard.testing import ProxyWindowServer, RateLimited
from redis_processes import two_processes

pytestmark = pytest.mark.looptime(False)

QUOTAS = (Quota(20, 2.05, False, learn=True, margin=0.05),)


async def reserve(backend, n):
    """``n`` reservations admitted now for key None: their tickets."""
    tickets = [(await backend.reserve(None, QUOTAS, 0))[1] for _ in range(n)]
    assert all(ticket is not None for ticket in tickets)
    return tickets


@pytest.mark.parametrize("server", ["fixed", "sliding"])
async def test_the_first_answer_after_a_boundary_is_read_against_every_process(
        redis_url, redis_prefix, server):
    """Process A hears ``remaining`` without a reset (a clock minute supposed at the next
    boundary); after it, process B sends 8 and A one. A's answer says 11 of 20 remain: the
    server counted all 9 afresh, a fixed window (A alone sent 1 of them: read against its own,
    it was refuted as sliding). Had B sent 8 before the boundary as well and the server said
    2 remain, that is a sliding window still counting those: refuted."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    loop = asyncio.get_running_loop()
    (ticket,) = await reserve(first, 1)
    if server == "sliding":
        await reserve(other, 8)
    first.observe(None, QUOTAS, False, 19, None, ticket=ticket)  # remaining, no reset
    shape = first._local.window(None, QUOTAS).shape
    assert shape.kind == "unknown" and shape.candidate is not None
    await asyncio.sleep(max(0.0, shape.candidate + 0.2 - loop.time()))
    await reserve(other, 8)
    (ticket,) = await reserve(first, 1)
    assert isinstance(shape.others, Others)  # B's admissions, read on A's reservation
    first.observe(None, QUOTAS, False, 11 if server == "fixed" else 2, None, ticket=ticket)
    assert shape.kind == server, shape
    await first.aclose()
    await other.aclose()


PART = (Quota(100, 20.5, True, learn=True, margin=0.5, part="input"),)


async def test_an_input_output_part_is_paced_as_the_bucket_assumed_until_a_429_says_not(
        redis_url, redis_prefix):
    """An input token quota not learned yet is paced, as in memory, as the bucket Anthropic
    documents: after 100 of 100 tokens, 50 more wait the bucket's refill (~10 s), not the
    window (~20 s). A 429 asking for longer than that refill drops the assumption for every
    process: another then waits for the sliding log. Waits are read from the reservations
    Redis refuses, not timed."""
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    tickets = [(await first.reserve(None, PART, 50))[1] for _ in range(2)]
    assert all(ticket is not None for ticket in tickets)
    wait, ticket = await other.reserve(None, PART, 50)
    assert ticket is None and 5.0 < wait < 15.0, wait
    first.refused(None, PART, 12.0, ticket=tickets[1])  # longer than 1.5 s + the 10 s refill
    await first.connection.aclose()  # its writes have landed
    wait, ticket = await other.reserve(None, PART, 50)
    assert ticket is None and wait > 16.0, wait
    await first.aclose()
    await other.aclose()


async def test_two_processes_behind_a_queueing_proxy_learn_its_minute(redis_url, redis_prefix):
    """LiteLLM's proxy under load, its minute compressed to 4 s: 59 requests a window, one
    worker taking 0.02 s each and counting a request when it takes it (at 0.05 s, 59 of them
    fill 3 of the window's 4 s, and a loaded machine's lag on each turn made the proxy itself
    count dozens late, into the next window: 22-38 429s with two cores busy), its headers counting
    answers. Two processes send 3x the quota at once, 90% into a window: the first answers
    after the boundary count both processes' requests, which read against one process's own
    looked like a sliding window's (the minute refuted: paced as a sliding log, which a proxy
    counting late overruns). Read against both, the clock window is learned (a process may
    end before it adopts what the other learned last: none learns sliding), with a few 429s
    at most, and nothing but 429s failing."""
    server = ProxyWindowServer(rpm=60, window=4.0, latency=0.02, workers=1, reports="answered",
                               overload_at=10**9)
    layers, calls = two_processes(server, redis_url, redis_prefix, 60)
    for layer in layers:  # the proxy's 4-second window
        layer.quotas = (Quota(60, 4.05, False, learn=True, margin=0.05),)
    await asyncio.sleep((3.6 - clock.wall()) % 4.0)
    results = await asyncio.gather(*(calls[i % 2]() for i in range(180)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, RateLimited) for e in errors), errors
    shapes = [layer.statistics().shape for layer in layers]
    assert any(shape.startswith("fixed") for shape in shapes), shapes
    assert not any(shape.startswith("sliding") for shape in shapes), shapes
    # One 429 teaches ``rpm - 1``; a few more are the loaded machine's (this minute is 4 s, so
    # the clocks' skew allowed past its boundary is 3 ms, less than a busy loop's lag). Paced
    # as a sliding log, the processes overrun the proxy by dozens.
    assert server.statistics().rate_limited <= 5, server.statistics()
    for layer in layers:
        await layer.backend.aclose()
