"""``QuotaServer.ideal_time(in_flight=N)``: the soonest its quotas and N calls at once allow."""

import pytest

from llmguard.testing import FixedWindowServer


def test_in_flight_bounds_the_ideal_and_a_bad_value_is_named() -> None:
    server = FixedWindowServer(rpm=60, latency=2.0)
    assert server.ideal_time(10) == pytest.approx(2.0)  # the quota admits all 10 at once
    assert server.ideal_time(10, in_flight=2) == pytest.approx(10.0)  # 5 rounds of 2 s
    with pytest.raises(ValueError, match="in_flight.*e.g. in_flight=32"):
        server.ideal_time(10, in_flight=0)


def test_input_output_in_flight_holds_max_tokens_until_each_answer_ends() -> None:
    """A gateway counting input and output per clock minute, 138 calls of 200 output tokens
    (64 used) from :58: the window bound (124 s) lets every answer give back at once; sent in
    order, each holding its ``max_tokens`` until it ends 2 s later, only 15 fit before :00,
    and the 35 left at :00 go in waves of 15, 10, 7 and 3 (:00 to :08: 130 s). Keeping
    ``max_tokens`` charged, both are the windows' count (15 a minute)."""
    from llmguard.testing import InputOutputBucketServer

    def server(gives_back: bool) -> InputOutputBucketServer:
        return InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                       output_tokens=64, shape="fixed", refunds_output=gives_back)

    ask = {"start": 58.0, "input_tokens": 98, "max_tokens": 200, "output_tokens": 64}
    assert server(True).ideal_time(138, **ask) == pytest.approx(124.0)
    assert server(True).ideal_time(138, **ask, in_flight=32) == pytest.approx(130.0)
    kept = {**ask, "output_tokens": 200}
    assert server(False).ideal_time(138, **kept, in_flight=32) == \
        pytest.approx(server(False).ideal_time(138, **kept)) == pytest.approx(484.0)
