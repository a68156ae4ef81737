"""Input and output token quotas (``RateLimit(input_tpm=, output_tpm=)``) against a gateway
that counts them per clock minute and sends Anthropic's ``anthropic-ratelimit-*`` headers, a
batch started a moment before a boundary: the burst is answered after it, so its readings show
a fresh window whose reset lies a window past the boundary. All in virtual time (issue #30)."""

import sys
from pathlib import Path

import pytest

from llmguard._admission.ratelimit.window import Quota, Window
from llmguard.testing import InputOutputBucketServer

sys.path.insert(0, str(Path(__file__).parent.parent))
from late_start import run_split  # noqa: E402


@pytest.mark.parametrize("gives_back", [True, False])
@pytest.mark.parametrize("phase", [55, 58, 59])
async def test_a_burst_answered_after_the_boundary_shows_the_clock_minute(
        phase: float, gives_back: bool) -> None:
    """``rpm``/``input_tpm``/``output_tpm`` only, 3x the quota at once, :58 or :59 into the
    gateway's minute: the opening burst is answered after :00 with every quota full and reset
    60 s (the next boundary). That is no sliding window's (one still counting our burst sent
    within it would report it), so each part learns the fixed window there, and the run ends
    within 1.10x the ideal without a 429. Read as a sliding window (its reset no earlier than
    our oldest leaves one), each burst waited a whole window, was answered after the next
    boundary again and was never told apart: 3.48x at :58, 2.97x at :59 (keeping
    ``max_tokens`` charged, 15 calls a minute: 1.12x, a minute lost)."""
    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64, shape="fixed", refunds_output=gives_back)
    layer, wall, ideal = await run_split(server, phase, 138)
    assert server.statistics().rate_limited == 0
    assert wall <= 1.10 * ideal, (wall, ideal, layer.statistics().shape)
    shape = layer.statistics().shape
    for part in ("requests: ", "input: ", "output: "):
        assert shape.split(part)[1].startswith("fixed ("), shape


@pytest.mark.parametrize("left", [3_000 - 15 * 64, 3_000 - 15])
def test_a_reading_that_still_counts_ours_stays_a_sliding_window(left: int) -> None:
    """The same burst (15 of 200 output tokens at :58, answered at :00) read by a sliding
    window giving unused output back: it still counts each at least a token, so its reading
    (even if each answer used one token) is not full and nothing teaches a fixed window."""
    quota = Quota(3_000, 60.5, True, learn=True, margin=0.5, part="output")
    window = Window((quota,))
    burst = [window.add(58.0, 200) for _ in range(15)]
    window.cap(60.0, True, left, 60.0, burst[-1], 3_000, 60.0, as_of_now=True)
    assert window.shape.kind == "sliding", window.shape
    window.cap(60.0, True, 3_000, 60.0, burst[-1], 3_000, 60.0, as_of_now=True)
    assert window.shape.kind == "fixed" and window.shape.epoch == pytest.approx(120.0)
