"""``QuotaServer.ideal_time(in_flight=N)``: the soonest its quotas and N calls at once allow."""

import pytest

from llmguard.testing import FixedWindowServer


def test_in_flight_bounds_the_ideal_and_a_bad_value_is_named() -> None:
    server = FixedWindowServer(rpm=60, latency=2.0)
    assert server.ideal_time(10) == pytest.approx(2.0)  # the quota admits all 10 at once
    assert server.ideal_time(10, in_flight=2) == pytest.approx(10.0)  # 5 rounds of 2 s
    with pytest.raises(ValueError, match="in_flight.*e.g. in_flight=32"):
        server.ideal_time(10, in_flight=0)
