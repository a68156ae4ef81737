"""A token cap read from a header at the opening factor follows ours counted anew when a
burst's readings calibrate it (:mod:`llmguard._admission.ratelimit.recounted`): a strict
10,000 TPM clock-minute window (charging 1/0.9 of our estimate: 236 tokens a call, 42 a
minute) started at :56 or :57, 3x its quota (126 calls) through the README stack with only the
quotas given. Virtual time, the wall clock pinned to the loop's."""

from types import SimpleNamespace

import pytest

from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.reading import Readings
from llmguard._admission.ratelimit.recounted import counted, recount
from llmguard._admission.ratelimit.window import Quota, Window
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


@pytest.mark.parametrize("factor", [1.05, 1.25])
def test_a_cap_an_older_reading_of_its_burst_bounds_follows_ours_counted_anew(
        factor: float) -> None:
    """Five of ours at the opening factor (1.15x: 230, 115, 345, 230, 230 tokens), read in the
    answer to the second, then to the third (another client's use between: lower): the cap is
    the first reading's bound, which subtracted all of ours but the second. Ours then counted
    anew at a factor that falls (1.05x) or rises (1.25x): the cap stays what that bound leaves
    (the group's, the third's count changed, not the second's). Before, the cap took the
    third for its own ticket: it missed the third's change and took the second's, 20 tokens
    of room the server never had after the rise, 20 below what it had after the fall."""
    window = Window((Quota(600, 60.05, False, learn=True, margin=0.05),
                     Quota(10_000, 60.05, True, learn=True, margin=0.05)))
    ours = [window.add(0.0, estimate) for estimate in (200, 100, 300, 200, 200)]
    window.cap(1.0, True, 9_000, 59.0, ticket=ours[1], limit=10_000)
    window.cap(1.1, True, 8_000, 58.9, ticket=ours[2], limit=10_000)
    cap, group = window.caps[True], window.readings.groups[True]
    assert cap[0] == group[1] == 9_000 - 230 - 345 - 230 - 230
    window.charge.factor = factor
    recount(window, 2.0, window.charge, ours)
    changed = sum(entry.tokens - was for entry, was in zip(ours, (230, 115, 345, 230, 230))
                  if entry is not ours[1])
    assert cap[0] == 9_000 - 230 - 345 - 230 - 230 - changed
    assert cap[0] == group[1] + group[5]  # what the group's bound leaves (nothing admitted)


@pytest.mark.parametrize("factor", [1.05, 1.25])
def test_a_reading_after_ours_were_counted_anew_subtracts_them_as_counted(factor: float) -> None:
    """Three of ours at the opening factor (230, 115, 345 tokens), counted anew at a factor
    that falls (1.05x) or rises (1.25x: a 429 measured more) before the answer to the first
    is read: the cap subtracts the other two as now counted, what the server will count of
    them. Before, a rise was left out (the admitted amounts subtracted): 40 tokens of room
    the server never had."""
    window = Window((Quota(600, 60.05, False, learn=True, margin=0.05),
                     Quota(10_000, 60.05, True, learn=True, margin=0.05)))
    ours = [window.add(0.0, estimate) for estimate in (200, 100, 300)]
    window.charge.factor = factor
    recount(window, 0.5, window.charge, ours)
    window.cap(1.0, True, 9_000, 59.0, ticket=ours[0], limit=10_000)
    assert window.caps[True][0] == 9_000 - ours[1].tokens - ours[2].tokens


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
