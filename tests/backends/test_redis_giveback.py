"""RedisBackend shares the give-back verdict of ``RateLimit(output_tpm=...)``: whether the
server gives unused output back, learned by one process, is adopted by every other at its next
reservation (``backends.redis._giveback``), so no other process tests the server again (a 429
each) nor keeps ``max_tokens`` charged while the first already knows.

Real Redis and real time: looptime is off. Process A learns by the test it runs when no output
header is heard (``ratelimit.giveback``): one answer's unused output given back, and the request
admitted only thanks to it served or refused. What is asserted is the verdict, never a timing.
"""

import asyncio
import time

import pytest

from llmguard._admission.ratelimit.backend import MemoryBackend
from llmguard._admission.ratelimit.split import Tokens
from llmguard._admission.ratelimit.split_backend import SplitBackend
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

OUTPUT = (Quota(1000, 60.5, True, learn=True, margin=0.5, part="output"),)


async def admitted(backend, output):
    """A reservation of ``output`` tokens for key None, once Redis admits it: its ticket."""
    while True:
        wait, ticket = await backend.reserve(None, OUTPUT, Tokens(0, output))
        if ticket is not None:
            return ticket
        await asyncio.sleep(wait)


@pytest.mark.parametrize("served", [True, False])
async def test_a_verdict_learned_by_one_process_is_adopted_by_the_other(
        redis_url, redis_prefix, served):
    """B is tracking the key (verdict unknown); A's answer leaves 500 of 600 unused, given back
    as a test; A's next request fits only thanks to it and is served (the server gives back)
    or refused (it keeps max_tokens). B's next reservation returns A's verdict: B adopts it."""
    first = SplitBackend(RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0))
    other = SplitBackend(RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0))
    try:
        ticket = await admitted(other, 50)
        other.reconcile(None, ticket, Tokens(0, 50))
        assert other.giveback[None].verdict is None
        ticket = await admitted(first, 600)
        first.reconcile(None, ticket, Tokens(0, 100))  # 500 unused: given back, to test
        back = first.giveback[None]
        assert back.credit == 500 and back.verdict is None
        test = await admitted(first, 600)
        assert back.probe is first._entry(test, "output")  # it fits only thanks to the 500
        if served:
            first.reconcile(None, test, Tokens(0, 100))
        else:
            first.refused(None, OUTPUT, 0.01, ticket=test)
        assert back.verdict is served and back.told is served
        await first.inner.aclose()  # its writes (the verdict among them) have landed
        assert other.giveback[None].verdict is None  # not before its next reservation
        ticket = await admitted(other, 50)
        mine = other.giveback[None]
        assert mine.verdict is served, mine.why
        assert mine.why.startswith("learned by another process: a request admitted only")
        assert mine.told is served  # adopted, not shared again
        assert mine.probe is None and mine.credit == 0  # B runs no test of its own
        other.reconcile(None, ticket, Tokens(0, 10))
        # B settles its answers by the verdict adopted: 40 unused given back if served
        assert not mine.held
    finally:
        await first.inner.aclose()
        await other.inner.aclose()


@pytest.mark.parametrize("refill", ["auto", "continuous"])
@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_unused_output_comes_back_as_far_as_the_servers_bucket_surely_holds_it(
        redis_url, redis_prefix, where, refill):
    """15 calls of 200 empty an output bucket of 3,000 a minute; 1.5 s on, the first is
    answered having used 64. The server's bucket has refilled about 74 and holds the 136 given
    back on top; ours may rise to what a server full at the give-back would hold less what ours
    can have charged it since (the 14 others: 200), as in memory (``output.OutputBucket``).
    Main gave back only the refund's bound in Redis (136 less the refill: 135 after a call of
    1, whatever the time), holding back room the server had; a bucket configured alike."""
    auto = refill == "auto"
    quotas = (Quota(3_000, 60.5, True, not auto, auto, 0.5, part="output"),)
    backend = MemoryBackend() if where == "memory" else RedisBackend(
        redis_url, prefix=redis_prefix, timeout=30.0)
    rate = 3_000 / 60.5
    try:
        tickets = [(await backend.reserve(None, quotas, 200))[1] for _ in range(15)]
        assert None not in tickets
        emptied = time.monotonic()  # after the last reservation: the server's refill is later
        await asyncio.sleep(1.5)
        backend.reconcile(None, tickets[0], 64)
        # landed (refill="continuous" writes it in the background; "auto" carries it)
        await asyncio.gather(*getattr(getattr(backend, "connection", None), "_tasks", ()))
        before = time.monotonic()
        _, ticket = await backend.reserve(None, quotas, 1)  # (carries the settlement)
        after = time.monotonic()
        assert ticket is not None
        _, free, _ = backend.headroom(None, quotas)
        # at least what the server surely holds up to that bound, at most what it holds
        assert free >= min(200, 136 + rate * (before - emptied)) - 1 - 1e-6, free
        assert free <= 136 + rate * (after - emptied + 0.1), free
    finally:
        if where == "redis":
            await backend.aclose()


async def test_a_verdict_in_doubt_is_shared_in_doubt(redis_url, redis_prefix):
    """A's test is served while the clock minute's count of its reservations had room for it
    (``giveback_minute``: a window counting max_tokens per clock minute, started afresh, would
    have served it too): the give-back is provisional. B adopts it in doubt, so a 429 to B
    (that window filled by max_tokens) refutes it for B, and through Redis for A, each
    charging again what it gave back meanwhile. Shared as settled, B's 429 refuted nothing:
    every process went on giving unused output back to a server that keeps it."""
    first = SplitBackend(RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0))
    other = SplitBackend(RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0))
    try:
        ticket = await admitted(other, 50)
        other.reconcile(None, ticket, Tokens(0, 50))
        ticket = await admitted(first, 600)
        first.reconcile(None, ticket, Tokens(0, 100))  # 500 unused: given back, to test
        back = first.giveback[None]
        back.minute.used = 0  # (the test in a clock minute of its own, whatever the clock)
        test = await admitted(first, 600)
        assert back.probe is first._entry(test, "output")
        first.reconcile(None, test, Tokens(0, 100))
        assert back.verdict is True and back.minute.open
        await first.inner.connection.kept()  # the verdict written
        ticket = await admitted(other, 50)
        mine = other.giveback[None]
        assert mine.verdict is True and mine.minute.open, mine.why
        refused = await admitted(other, 50)
        other.refused(None, OUTPUT, 0.01, ticket=refused)  # the minute's window is full
        assert mine.verdict is False, mine.why
        await other.inner.connection.kept()
        await admitted(first, 10)  # A's next reservation reads B's refutation
        assert back.verdict is False and not back.minute.open, back.why
        other.reconcile(None, ticket, Tokens(0, 10))
    finally:
        await first.inner.aclose()
        await other.inner.aclose()
