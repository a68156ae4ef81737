"""A burst answered together shows the give-back in its first answers' readings
(``ratelimit/giveback_burst.py``), and a server keeping ``max_tokens`` charged never shows it:
pure, against a modelled server (``now`` is passed), and in virtual time against
:class:`~llmguard.testing.InputOutputBucketServer`."""

from __future__ import annotations

import asyncio
import heapq
import math
import random

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.giveback import GiveBack
from llmguard.testing import InputOutputBucketServer

LIMIT, WINDOW, SPREAD = 2_000, 60.0, 0.5
MAX_TOKENS, USED = 400, 64


class Server:
    """An output quota of ``LIMIT`` a ``WINDOW``: a bucket refilling continuously, or a gateway
    counting per clock minute (``fixed``); charged ``max_tokens`` at arrival, given the unused
    part back when the answer ends if ``gives_back``."""

    def __init__(self, gives_back: bool, shape: str = "bucket") -> None:
        self.gives_back, self.shape = gives_back, shape
        self.level, self.at, self.index = float(LIMIT), 0.0, 0

    def _refill(self, now: float) -> None:
        if self.shape == "bucket":
            self.level = min(LIMIT, self.level + LIMIT / WINDOW * (now - self.at))
        elif math.floor(now / WINDOW) != self.index:
            self.level, self.index = float(LIMIT), math.floor(now / WINDOW)
        self.at = now

    def arrive(self, now: float) -> None:
        self._refill(now)
        self.level -= MAX_TOKENS

    def end(self, now: float) -> int:
        self._refill(now)
        if self.gives_back:
            self.level += MAX_TOKENS - USED
        return int(self.level)


def burst(server: Server, *, start: float = 0.0, calls: int = 5, later: int = 0,
          every: float = 12.0, send: tuple[float, float] = (0.1, 0.1), service: float = 0.2,
          twice: bool = False, seed: int = 0, back_way: tuple[float, float] = (0.0, 0.0),
          streamed: bool = False) -> tuple[GiveBack, list[float]]:
    """``calls`` admitted at ``start`` and ``later`` more one ``every`` s after, each reaching
    the server within ``send`` s, answered ``service`` s after, its answer back within
    ``back_way`` s (answers may come back out of order). As through the ``anthropic`` SDK, an
    answer's reading is read before its usage (``twice``: and again after it); ``streamed``:
    its headers as of its arrival, back that long after it, its usage as its answer ends. The
    times of the verdict's readings returned."""
    rng, back = random.Random(seed), GiveBack(SPREAD, WINDOW)
    back.quota = LIMIT
    events: list[tuple[float, int, int]] = []  # (when, what, call)
    readings: dict[int, int] = {}
    for i in range(calls + later):
        heapq.heappush(events, (start + max(0, i - calls + 1) * every, 0, i))
    entries = [object() for _ in range(calls + later)]
    judged: list[float] = []
    way: dict[int, float] = {}
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 0:
            back.admitted(now, MAX_TOKENS, entries[i])
            heapq.heappush(events, (now + rng.uniform(*send), 1, i))
        elif kind == 1:
            server.arrive(now)
            heapq.heappush(events, (now + service, 2, i))
            if streamed:  # its headers now, back as its chunks will be
                readings[i], way[i] = int(server.level), rng.uniform(*back_way)
                heapq.heappush(events, (now + way[i], 4, i))
        elif kind == 2:
            ended = server.end(now)
            if not streamed:
                readings[i] = ended
            heapq.heappush(events, (now + way.get(i, rng.uniform(*back_way)), 3, i))
        elif kind == 4:
            back.read(now, readings.pop(i), LIMIT, entry=entries[i], started=True)
        elif streamed:
            back.ended(now, USED, MAX_TOKENS, lambda n: None, entries[i])
        else:
            remaining = readings.pop(i)
            back.read(now, remaining, LIMIT, entry=entries[i])
            back.ended(now, USED, MAX_TOKENS, lambda n: None, entries[i])
            if twice:
                back.read(now, remaining, LIMIT, entry=entries[i])
            if back.verdict is True and not judged:
                judged.append(now)
    return back, judged


@pytest.mark.parametrize("twice", [False, True])
def test_a_burst_answered_together_shows_the_give_back_in_its_first_answers(twice: bool) -> None:
    """Five calls of 400 against 2,000 a minute, answered together: too little given back in
    a span for the general judgement (twice the largest request and the slack), but nothing of
    ours is admitted meanwhile: the readings rise by the unused output ended, above what a
    server keeping max_tokens allows, twice, and the fourth answer's reading does not drop
    below them (as it would after a reading out of order): it gives back."""
    back, judged = burst(Server(True), twice=twice)
    assert back.verdict is True, back.describe()
    assert "twice within 10 s of a burst's answers" in back.describe()
    assert judged and judged[0] < 1.0


def test_a_burst_of_streams_shows_the_give_back_in_their_starts() -> None:
    """Five streams of 400 against 2,000 a minute, then one every 2 s: each one's headers show
    the server as it arrived (its max_tokens charged, those ended before it given back), read
    as of its admission, so the next ones show the give-back of those ended before them. (Read
    as of when they came, the burst's answers ended meanwhile counted as given back where the
    server showed none, and the others in flight with it bound the rise: never judged, every
    stream's unused output held back.)"""
    back, _ = burst(Server(True), later=6, every=2.0, streamed=True)
    assert back.verdict is True, back.describe()
    assert "twice within 10 s of a burst's answers" in back.describe()


@pytest.mark.parametrize("shape", ["bucket", "fixed"])
@pytest.mark.parametrize("start", [0.0, 40.0, 59.9])
def test_a_server_keeping_max_tokens_never_shows_streams_giving_back(shape: str,
                                                                    start: float) -> None:
    """The streams of the test above, and bursts of 3 and 5 then later ones at the refill's
    pace or twice it, against a bucket or a per-minute gateway that keep max_tokens charged,
    their headers back within up to three times the spread: never judged giving back."""
    for calls, every in ((5, 12.0), (3, 12.0), (5, 6.0), (3, 0.2)):
        for send in ((0.0, 0.0), (0.1, 0.45), (0.0, 1.0)):
            for back_way in ((0.0, 0.0), (0.0, 0.5), (0.0, 1.5)):
                for service, seed in ((0.2, 0), (2.0, 1)):
                    back, _ = burst(Server(False, shape), start=start, calls=calls, later=20,
                                    every=every, send=send, service=service, seed=seed,
                                    back_way=back_way, streamed=True)
                    assert back.verdict is not True, (calls, send, back_way, service, seed,
                                                      back.describe())


@pytest.mark.parametrize("shape", ["bucket", "fixed"])
@pytest.mark.parametrize("start", [0.0, 40.0, 58.0, 59.75, 59.9])
def test_a_server_keeping_max_tokens_never_shows_a_burst_giving_back(shape: str,
                                                                    start: float) -> None:
    """Against a bucket or a gateway counting per clock minute (its count afresh at each
    boundary: the readings rise once a window) that keep max_tokens charged: bursts of 3 and
    5, later calls at the refill's pace (or twice it) for minutes or while the burst is
    answered (charged after the reading that follows them), ours reaching the server
    within up to twice the spread (stragglers), answered in 0.2 or 2 s, coming back within up
    to three times the spread (out of order: a reading older than the one before it), read
    once or twice: never judged giving back."""
    for calls, every in ((3, 12.0), (5, 6.0), (3, 0.2)):  # last: ours sent meanwhile
        for send in ((0.0, 0.0), (0.1, 0.45), (0.0, 1.0)):
            for back_way in ((0.0, 0.0), (0.0, 0.5), (0.0, 1.5)):
                for service in (0.2, 2.0):
                    for twice, seed in ((False, 0), (True, 1), (False, 2)):
                        back, _ = burst(Server(False, shape), start=start, calls=calls,
                                        later=20, every=every, send=send, service=service,
                                        twice=twice, seed=seed, back_way=back_way)
                        assert back.verdict is not True, (calls, send, back_way, service,
                                                          twice, seed, back.describe())


QUOTAS = {"rpm": 50, "input_tpm": 20_000, "output_tpm": 2_000}


async def twelve_calls(gives_back: bool, shape: str = "bucket",
                       phase: float = 0.0) -> tuple[float, lg.RateLimit, InputOutputBucketServer]:
    """``examples/anthropic_client.py``: twelve calls of max_tokens=400 (64 used) at once
    against 2,000 output tokens a minute, through ``RateLimit`` with the quotas and nothing
    else, started ``phase`` s into a minute."""
    server = InputOutputBucketServer(**QUOTAS, latency=0.2, output_tokens=64,
                                     refunds_output=gives_back, shape=shape)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((phase - loop.time()) % 60)
    limit = lg.RateLimit(**QUOTAS)
    server.on_headers.append(limit.observe_headers)
    send = lg.Pipeline(name="claude").retry(attempts=4).then(limit).wrap(server.amessages)
    start = loop.time()
    await asyncio.gather(*(send(model="claude", max_tokens=400, messages=[
        {"role": "user", "content": f"Question {i}: what is a token bucket?"}])
        for i in range(12)))
    return loop.time() - start, limit, server


async def test_a_small_burst_against_anthropics_buckets_goes_as_given_back() -> None:
    """The five that fit go at once; their answers' readings show the give-back, so the
    other seven go as their unused output comes back, not at the refill's pace (84 s, each
    max_tokens kept charged), and none is refused."""
    wall, limit, server = await twelve_calls(True)
    assert server.statistics().rate_limited == 0
    assert "unused output given back (the server does)" in repr(limit)
    ideal = server.ideal_time(12, input_tokens=16, max_tokens=400, output_tokens=64,
                              in_flight=12)
    assert wall <= ideal + 1.0, (wall, ideal)


@pytest.mark.parametrize("shape,phase", [("bucket", 0.0), ("fixed", 0.0), ("fixed", 59.9)])
async def test_a_small_burst_against_a_server_keeping_max_tokens_keeps_it(shape: str,
                                                                         phase: float) -> None:
    """The same twelve against a server (or a gateway counting per clock minute, the burst
    answered after its boundary) that keeps max_tokens charged: never judged giving back, and
    none refused but the gateway's one (its shape learned from it, as before bursts were
    judged)."""
    _, limit, server = await twelve_calls(False, shape, phase)
    assert server.statistics().rate_limited <= (shape == "fixed")
    assert "unused output given back (the server does)" not in repr(limit)


def test_a_request_that_failed_without_reaching_the_server_is_no_give_back() -> None:
    """Between a burst's answers, one of ours fails after it was sent (a connection refused:
    settled as reserved, never charged by the server). It is not counted as charged: the
    server keeping max_tokens then reads its output higher than our count, by it, as a
    give-back would; the answer without usage keeps it among ours possibly on the way."""
    back, server = GiveBack(SPREAD, WINDOW), Server(False)
    back.quota = LIMIT
    burst_ = [object() for _ in range(5)]
    for entry in burst_:
        back.admitted(0.0, MAX_TOKENS, entry)
    for entry in burst_:
        server.arrive(0.1)
    for i, entry in enumerate(burst_):
        now = 0.3 + i * 0.2
        back.read(now, server.end(now), LIMIT, entry=entry)
        back.ended(now, USED, MAX_TOKENS, lambda n: None, entry)
        lost = object()
        back.admitted(now + 0.05, MAX_TOKENS, lost)
        back.ended(now + 0.1, MAX_TOKENS, MAX_TOKENS, lambda n: None, lost)
    assert back.verdict is not True, back.describe()
