"""A token cap read from a header at the opening factor follows ours counted anew when a
burst's readings calibrate it (:mod:`llmguard._admission.ratelimit.recounted`): a strict
10,000 TPM clock-minute window (charging 1/0.9 of our estimate: 236 tokens a call, 42 a
minute) started at :56 or :57, 3x its quota (126 calls) through the README stack with only the
quotas given. Virtual time, the wall clock pinned to the loop's."""

from types import SimpleNamespace

import pytest

from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.reading import Readings
from llmguard._admission.ratelimit.recounted import counted
from llmguard.testing import FixedWindowServer, ProxyWindowServer
from late_start import run


def test_a_cap_and_its_group_give_back_what_ours_they_subtracted_count_less() -> None:
    """Ours the reading took off as not counted by the server yet (from its first seq on, or
    queued below as it read) give the change back to the cap and the group; its own ticket
    (the server counted it as it charges) and ours before the first seq give nothing."""
    readings = Readings(0.05)
    #            [anchor, best, read at, issued, first seq, returned, marks, ticket seq]
    readings.groups[True] = [0.0, 248, 2.0, 9760, 3, 0, 1, 5]
    window = SimpleNamespace(caps={True: [4, 60.0, 3, 5, 1]}, readings=readings)
    before, queued, ticket, after = (Entry(0.0, 244, seq=1), Entry(0.0, 244, seq=2),
                                     Entry(0.0, 244, seq=5), Entry(0.0, 244, seq=7))
    queued.queued = 1  # queued below as the reading read (its first mark)
    for entry in (before, queued, ticket, after):
        counted(window, entry, 236)
        assert entry.tokens == 236
    assert window.caps[True][0] == 4 + 2 * 8  # the queued one and the later one
    assert readings.groups[True][5] == 2 * 8
    counted(window, after, 244)  # counted higher again (a 429 measured more): taken back
    assert window.caps[True][0] == 4 + 8 and readings.groups[True][5] == 8


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize(("shape", "phase"), [
    (FixedWindowServer, 56.0), (FixedWindowServer, 57.0), (ProxyWindowServer, 56.0)])
async def test_a_strict_window_from_56_sends_its_42_calls_a_minute(shape: type,
                                                                   phase: float) -> None:
    """Before: 1.91x (:56), 1.92x (:57), no 429. The first answer's reading left a cap of what
    the other 39 of ours in flight left at the opening factor (244 each): 4 tokens after the
    41st; the burst then calibrated 1.113x (236 each) and its last reading left 2,448, but the
    cap stayed at 4, so the 42nd call of the minute waited for :00 and three minutes' quota
    took a fourth."""
    server = shape(rpm=60, tpm=10_000, latency=2.0, charge_factor=1 / 0.9)
    layer, wall, ideal = await run(server, phase, 126)
    assert server.statistics().rate_limited == 0
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
