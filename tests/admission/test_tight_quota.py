"""A 10,000 TPM server charging exactly our estimate (212 a call: 47 a minute, 36 tokens to
spare), 0-10 ms on the way, 3x its quota (141 calls) through the README stack with only the
quotas given: a token counted over what the server charged costs the 47th call of a minute,
and 141 calls a fourth minute (1.49x the ideal). Virtual time, the wall clock pinned to the
loop's."""

from types import SimpleNamespace

import pytest

from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.queued import Queued
from llmguard._admission.ratelimit.reading import Readings
from llmguard.testing import FixedWindowServer, SlidingWindowServer
from late_start import run


def test_ours_after_a_ticket_count_as_rescaled_while_not_settled() -> None:
    """Ours admitted at the opening factor (244 for an estimate of 212) then counted at 212
    when the factor came down (not settled: the server charged that) weigh 212 in a reading's
    bound, not what they reserved; a settled one weighs what it reserved (settled to a usage
    below the charge, it would read as room the server does not have)."""
    ticket, rescaled, settled = Entry(0.0, 212, owner="w", seq=0, tseq=0), \
        Entry(0.0, 244, owner="w", seq=1, tseq=212), Entry(0.0, 244, seq=2, tseq=456)
    rescaled.tokens, settled.tokens = 212, 100
    log = SimpleNamespace(entries=[ticket, rescaled, settled])
    assert Readings.after(log, True, ticket, 700, Queued()) == (212 + 244, 0)  # none queued


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize(("shape", "phase"), [
    (FixedWindowServer, 0.0), (FixedWindowServer, 55.0), (SlidingWindowServer, 0.0),
    (SlidingWindowServer, 55.0)])
async def test_a_tight_token_quota_sends_its_47_calls_a_minute(shape: type, phase: float) -> None:
    """With its rate-limit headers, from :00 and :55. Before: 1.49x (:00) and 1.90x (:55) on
    the fixed window, 1.49x on the sliding one. Two of the opening burst answered before the
    burst calibrated the factor (1.15 -> 1.0) stayed counted at 244 (settled at the factor
    then: ``Charge.rescale``), and ours admitted at 1.15 then counted at 1.0 weighed 244 in a
    reading's bound (``Readings.after``): 64 tokens over, the 47th call a minute late."""
    server = shape(rpm=60, tpm=10_000, latency=2.0)
    layer, wall, ideal = await run(server, phase, 141)
    assert server.statistics().rate_limited == 0
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
