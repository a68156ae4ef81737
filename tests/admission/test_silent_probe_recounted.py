"""A probe whose answer teaches a silent server's shape, and with it a lower factor, counts at
that factor: a strict 10,000 TPM clock-minute window (charging 1/0.9 of our estimate: 236
tokens a call, 42 a minute) that sends no rate-limit header, started at :56, 3x its quota (126
calls) through the README stack with only the quotas given. Virtual time, the wall clock
pinned to the loop's."""

import pytest

from llmguard.testing import FixedWindowServer
from late_start import run


@pytest.mark.usefixtures("pinned_wall_clock")
@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_silent_strict_window_from_56_sends_its_42_calls_a_minute(
        retry_after: bool) -> None:
    """With a retry-after on its 429s or a bare 429. Before: 1.91x, one 429. The probe
    answered at :04 of the second minute showed a fixed window: the factor came down from
    1.15 to 1.118 (238 a call) and ours were counted anew at it, the probe too; then the
    probe was settled at the factor it was answered at (244), 6 tokens over, and the 42nd
    call of that minute (42 x 238 = 9,996) waited for the next: a fourth minute."""
    server = FixedWindowServer(rpm=60, tpm=10_000, latency=2.0, charge_factor=1 / 0.9,
                               rate_limit_headers=False, retry_after=retry_after)
    layer, wall, ideal = await run(server, 56.0, 126)
    assert server.statistics().rate_limited <= 1
    assert wall <= 1.05 * ideal, (wall, ideal, layer.statistics().shape)
