"""RedisBackend shares the give-back verdict of ``RateLimit(output_tpm=...)``: whether the
server gives unused output back, learned by one process, is adopted by every other at its next
reservation (``backends.redis._giveback``), so no other process tests the server again (a 429
each) nor keeps ``max_tokens`` charged while the first already knows.

Real Redis and real time: looptime is off. Process A learns by the test it runs when no output
header is heard (``ratelimit.giveback``): one answer's unused output given back, and the request
admitted only thanks to it served or refused. What is asserted is the verdict, never a timing.
"""

import asyncio

import pytest

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
