"""RateLimit(input_tpm=, output_tpm=): input and output token quotas apart (Anthropic's
ITPM/OTPM), in memory and in Redis, and the Anthropic rate-limit headers that feed them."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.ratelimit.headers import parse_reset, part_headers, rate_limit_headers
from llmguard._admission.ratelimit.split import Tokens, split_estimate, split_used
from llmguard._core.tokens import extract_usage

MESSAGES = [{"role": "user", "content": "x" * 400}]  # 100 tokens + framing


def anthropic_answer(input_tokens: int, output: int, read: int = 0,
                     written: int = 0) -> dict[str, Any]:
    return {"type": "message", "usage": {
        "input_tokens": input_tokens, "output_tokens": output,
        "cache_read_input_tokens": read, "cache_creation_input_tokens": written}}


def output_left(limit: lg.RateLimit, key: Any = None) -> int:
    return limit.backend.part_headroom(key, limit.quotas, "output")  # type: ignore[attr-defined]


def input_left(limit: lg.RateLimit, key: Any = None) -> int:
    return limit.backend.part_headroom(key, limit.quotas, "input")  # type: ignore[attr-defined]


def test_the_estimate_splits_prompt_and_max_tokens() -> None:
    """Input is the prompt estimate (system prompt included), output max_tokens or 256; a
    user's ``tokens=`` may return (input, output) or a total of which max_tokens is output."""
    estimate = split_estimate(None)
    tokens = estimate(messages=MESSAGES, max_tokens=300)
    assert (tokens.input, tokens.output) == (lg.estimate_tokens(messages=MESSAGES, max_tokens=0),
                                             300)
    assert int(tokens) == tokens.input + tokens.output
    with_system = estimate(messages=MESSAGES, system="y" * 80, max_tokens=300)
    assert with_system.input == tokens.input + 20
    assert estimate(messages=MESSAGES).output == 256
    assert split_estimate(lambda **kw: (7, 9))(max_tokens=1) == Tokens(7, 9)
    assert split_estimate(lambda **kw: 1000)(max_tokens=300) == Tokens(700, 300)


def test_anthropic_usage_counts_cache_tokens_as_input_and_apart() -> None:
    """Usage.input_tokens is the whole prompt (Anthropic reports cache reads and writes apart
    and they are added); ITPM counts the uncached input and cache writes, not reads."""
    usage = extract_usage(anthropic_answer(100, 20, read=1000, written=50))
    assert usage == lg.Usage(1150, 20, 1000, 50)

    class Record:
        usage = None

    class Call:
        record = Record()

    used = split_used(Call(), anthropic_answer(100, 20, read=1000, written=50), Tokens(1, 2),
                      None)
    assert (used.input, used.output) == (150, 20)
    openai = extract_usage({"usage": {"prompt_tokens": 90, "completion_tokens": 5,
                                      "prompt_tokens_details": {"cached_tokens": 64}}})
    assert openai == lg.Usage(90, 5, 64, 0)


async def test_output_is_reserved_as_max_tokens_and_given_back_to_the_output_used() -> None:
    """While the call runs its output quota holds max_tokens; when it ends, the output it
    reported; its input is reconciled to the uncached input reported."""
    limit = lg.RateLimit(input_tpm=10_000, output_tpm=1_000)
    seen: list[int] = []

    async def provider(**kwargs: Any) -> dict[str, Any]:
        seen.append(output_left(limit))
        return anthropic_answer(120, 40, read=500)

    await lg.guard(limit)(provider)(messages=MESSAGES, max_tokens=600)
    assert seen == [400]
    assert output_left(limit) == 960
    assert input_left(limit) == 10_000 - 120


async def test_a_call_waits_for_output_room_not_for_input() -> None:
    """Two calls of max_tokens=600 against output_tpm=1000: the second waits until the first
    gives back its unused output (at its end, 1 s later), not for a whole minute."""
    limit = lg.RateLimit(input_tpm=10_000, output_tpm=1_000)

    async def provider(**kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(1)
        return anthropic_answer(100, 50)

    guarded = lg.guard(limit)(provider)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(guarded(messages=MESSAGES, max_tokens=600) for _ in range(2)))
    assert loop.time() - start == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("refill", ["window", "continuous", "auto"])
async def test_a_call_that_never_reached_the_provider_gives_back_every_part(refill: str) -> None:
    """Refused below (a ConcurrencyLimit's AdmissionTimeout): the request, its input and its
    output reservations all come back; statistics count one refund."""
    limit = lg.RateLimit(rpm=10, input_tpm=10_000, output_tpm=1_000, refill=refill)
    gate = lg.ConcurrencyLimit(1, max_wait=0.5)
    release = asyncio.Event()

    async def provider(**kwargs: Any) -> dict[str, Any]:
        await release.wait()
        return anthropic_answer(100, 10)

    guarded = lg.guard(limit, gate)(provider)
    first = asyncio.create_task(guarded(messages=MESSAGES, max_tokens=300))
    await asyncio.sleep(0)
    with pytest.raises(lg.AdmissionTimeout):
        await guarded(messages=MESSAGES, max_tokens=300)
    assert limit.statistics().refunds == 1
    assert output_left(limit) == 700 and limit.statistics().requests_available == 9
    release.set()
    await first


async def test_a_call_larger_than_a_part_is_refused_at_once_naming_it() -> None:
    """An output reservation over output_tpm (or a prompt over input_tpm) could never be
    admitted: RequestTooLarge at once, naming the quota and what to change."""
    limit = lg.RateLimit(input_tpm=50, output_tpm=1_000)

    async def provider(**kwargs: Any) -> None:
        raise AssertionError("never sent")

    guarded = lg.guard(limit)(provider)
    with pytest.raises(lg.RequestTooLarge, match="2000 output tokens.*lower max_tokens"):
        await guarded(messages=[{"role": "user", "content": "hi"}], max_tokens=2_000)
    with pytest.raises(lg.RequestTooLarge, match="input tokens.*shorten the prompt.*input_tpm"):
        await guarded(messages=MESSAGES, max_tokens=10)
    assert limit.statistics().rejected == 2


def test_quotas_describe_themselves() -> None:
    limit = lg.RateLimit(rpm=50, input_tpm=30_000, output_tpm=8_000)
    assert "30000 input tokens per minute" in repr(limit)
    assert "8000 output tokens per minute" in repr(limit)


def test_anthropic_headers_are_read_per_quota() -> None:
    """anthropic-ratelimit-*-remaining with RFC 3339 resets, each quota its own report."""
    soon = datetime.fromtimestamp(time.time() + 30, timezone.utc).isoformat().replace(
        "+00:00", "Z")
    headers = {f"anthropic-ratelimit-{unit}-{field}": value
               for unit in ("requests", "tokens", "input-tokens", "output-tokens")
               for field, value in (("limit", "1000"), ("remaining", "900"), ("reset", soon))}
    reports = list(rate_limit_headers(headers))
    assert [tokens for tokens, *_ in reports] == [False, True]
    parts = list(part_headers(headers))
    assert [part for part, *_ in parts] == ["input", "output"]
    assert all(left == 900 and limit == 1000 and 28 < reset <= 30.5
               for _, left, reset, limit in reports + parts)
    assert parse_reset("2000-01-01T00:00:00Z") == 0.0
    assert parse_reset("6m0s") == 360.0 and parse_reset("soon") is None


async def test_observe_headers_drains_the_input_and_output_quotas() -> None:
    """Anthropic's input and output remaining go to those quotas; a layer without them
    ignores them (its rpm still follows the requests report)."""
    headers = {"anthropic-ratelimit-input-tokens-remaining": "4000",
               "anthropic-ratelimit-input-tokens-reset": "2100-01-01T00:00:00Z",
               "anthropic-ratelimit-output-tokens-remaining": "300",
               "anthropic-ratelimit-output-tokens-reset": "2100-01-01T00:00:00Z",
               "anthropic-ratelimit-requests-remaining": "3",
               "anthropic-ratelimit-requests-reset": "2100-01-01T00:00:00Z"}
    limit = lg.RateLimit(rpm=50, input_tpm=30_000, output_tpm=8_000, refill="continuous")
    limit.observe_headers(headers)
    assert (input_left(limit), output_left(limit)) == (4000, 300)
    assert limit.statistics().requests_available == 3
    plain = lg.RateLimit(rpm=50, tpm=100_000)
    plain.observe_headers(headers)
    assert plain.statistics().tokens_available == 100_000


@pytest.mark.looptime(False)
@pytest.mark.parametrize("refill", ["window", "continuous", "auto"])
async def test_redis_shares_the_input_and_output_quotas(redis_url: str, redis_prefix: str,
                                                        refill: str) -> None:
    """Two RateLimits over one RedisBackend prefix share each part: after one spends output,
    the other sees less; a refund (AdmissionTimeout below) gives every part back."""
    from llmguard.backends.redis import RedisBackend

    backend = RedisBackend(redis_url, prefix=redis_prefix)
    try:
        a, b = (lg.RateLimit(rpm=100, input_tpm=10_000, output_tpm=1_000, refill=refill,
                             backend=backend) for _ in range(2))

        async def provider(**kwargs: Any) -> dict[str, Any]:
            return anthropic_answer(100, 100)

        await lg.guard(a)(provider)(messages=MESSAGES, max_tokens=500)
        await asyncio.sleep(0.2)  # the reconciliation is written in the background
        gate = lg.ConcurrencyLimit(1, max_wait=0.2)
        hold = asyncio.Event()

        async def slow(**kwargs: Any) -> dict[str, Any]:
            await hold.wait()
            return anthropic_answer(100, 100)

        guarded = lg.guard(b, gate)(slow)
        first = asyncio.create_task(guarded(messages=MESSAGES, max_tokens=800))
        for _ in range(3_000):  # a hang guard: Redis writes land in the background
            if b.statistics().in_flight == 1 and gate.statistics().in_flight == 1:
                break
            await asyncio.sleep(0.01)
        # b's first call fits only because a's output came back down to 100 of its 500
        assert b.statistics().admitted == 1
        with pytest.raises(lg.AdmissionTimeout):
            await guarded(messages=MESSAGES, max_tokens=50)
        assert b.statistics().refunds == 1
        hold.set()
        await first
    finally:
        await backend.aclose()


@settings(max_examples=40, deadline=None)
@given(
    refill=st.sampled_from(["window", "continuous"]),
    input_tpm=st.integers(200, 3_000),
    output_tpm=st.integers(500, 5_000),
    calls=st.lists(st.tuples(st.floats(0, 120), st.integers(1, 200), st.integers(1, 500),
                             st.integers(0, 500), st.floats(0.1, 20), st.booleans()),
                   min_size=1, max_size=40),
)
def test_a_server_counting_like_anthropic_never_finds_a_bucket_without_room(
        refill: str, input_tpm: int, output_tpm: int, calls: list[tuple[Any, ...]]) -> None:
    """Property: for any arrivals, prompt sizes, max_tokens, outputs used, service times and
    cancellations, a server counting input at arrival and output as max_tokens adjusted to the
    output used at the end (InputOutputBucketServer) never has to refuse a call admitted by
    RateLimit(input_tpm=, output_tpm=), with either refill; the layer ends at baseline."""
    from llmguard.testing import InputOutputBucketServer

    async def scenario() -> None:
        server = InputOutputBucketServer(input_tpm=input_tpm, output_tpm=output_tpm,
                                         output_tokens=lambda rng, kwargs: kwargs["used"])
        layer = lg.RateLimit(input_tpm=input_tpm, output_tpm=output_tpm, refill=refill)
        guarded = lg.guard(layer)(server.amessages)

        async def one(start: float, chars: int, max_tokens: int, used: int, service: float,
                      cancel: bool) -> None:
            await asyncio.sleep(start)
            server.latency = service
            if cancel:
                asyncio.get_running_loop().call_later(service / 2, asyncio.current_task().cancel)
            try:
                await guarded(messages=[{"role": "user", "content": "x" * chars}],
                              max_tokens=max_tokens, used=used)
            except (asyncio.CancelledError, lg.RequestTooLarge):
                pass

        await asyncio.gather(*(one(*c) for c in calls))
        assert server.statistics().rate_limited == 0, server
        stats = layer.statistics()
        assert (stats.in_flight, stats.waiting, stats.reserved_tokens) == (0, 0, 0)

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_over_a_remote_backend_a_partial_reservation_is_rolled_back() -> None:
    """Over a backend that reserves one key per round trip (Redis), a call whose output has no
    room gives back the request it had taken, and one cancelled between two round trips gives
    back what it took: nothing is left reserved but the calls admitted."""
    from llmguard._admission.ratelimit.split_backend import Part, SplitBackend

    class Remote:
        """A RateLimitBackend written from the protocol: counts per key, no room past 1,000."""

        def __init__(self) -> None:
            self.used: dict[Any, int] = {}
            self.gate: asyncio.Event | None = None

        async def reserve(self, key: Any, quotas: Any, tokens: int) -> tuple[float, Any]:
            await asyncio.sleep(0)  # a round trip
            if self.gate is not None and isinstance(key, Part):
                await self.gate.wait()
            amount = tokens if quotas[0].tokens else 1
            if self.used.get(key, 0) + amount > 1_000:
                return 1.0, None
            self.used[key] = self.used.get(key, 0) + amount
            return 0.0, (key, amount)

        def refund(self, key: Any, ticket: Any) -> None:
            self.used[key] -= ticket[1]

        def reconcile(self, key: Any, ticket: Any, tokens: int) -> None:
            pass

    remote = Remote()
    split = SplitBackend(remote)
    quotas = lg.RateLimit(rpm=1_000, output_tpm=1_000).quotas
    _, first = await split.reserve("k", quotas, Tokens(10, 900))
    assert first is not None and remote.used == {"k": 1, Part("output", "k"): 900}
    wait, refused = await split.reserve("k", quotas, Tokens(10, 200))
    assert refused is None and wait == 1.0
    assert remote.used == {"k": 1, Part("output", "k"): 900}  # the request went back
    remote.gate = asyncio.Event()
    pending = asyncio.create_task(split.reserve("k", quotas, Tokens(10, 50)))
    await asyncio.sleep(0.1)
    assert remote.used["k"] == 2  # taken, waiting for the output's round trip
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert remote.used == {"k": 1, Part("output", "k"): 900}


async def test_defaults_pace_input_output_buckets_like_anthropic() -> None:
    """``RateLimit(rpm=, input_tpm=, output_tpm=)`` with nothing else set, 3x the quota at
    once, started 40 s into a minute, against buckets that count like Anthropic's (the output
    reserved as ``max_tokens`` binds, given back when each answer ends, the headers as of then):
    every call done, no 429, within 1.10x the server's ideal; each part's shape is learned
    from its own ``anthropic-ratelimit-*-reset`` against its remaining, and said."""
    from llmguard.testing import InputOutputBucketServer

    server = InputOutputBucketServer(rpm=60, input_tpm=8_000, output_tpm=3_000, latency=2.0,
                                     output_tokens=64)
    loop = asyncio.get_running_loop()
    await asyncio.sleep((40 - loop.time()) % 60)
    limit = lg.RateLimit(rpm=60, input_tpm=8_000, output_tpm=3_000)
    server.on_headers.append(limit.observe_headers)
    send = lg.Pipeline(name="claude").retry(attempts=4).then(limit).concurrency_limit(32) \
        .wrap(server.amessages)
    prompt = "word " * 70
    calls = 138  # 3x: the output quota admits 46 calls of 64 tokens (200 reserved) a minute
    start = loop.time()
    results = await asyncio.gather(*(
        send(model="claude", max_tokens=200, messages=[{"role": "user", "content": prompt + str(i)}])
        for i in range(calls)))
    wall = loop.time() - start
    assert len(results) == calls
    assert server.statistics().rate_limited <= calls // 100
    ideal = server.ideal_time(calls, start=start, input_tokens=98, max_tokens=200,
                              output_tokens=64)
    assert wall <= 1.10 * ideal, (wall, ideal)
    shape = limit.statistics().shape
    assert shape.startswith("requests: bucket (reset") and "input: bucket (reset" in shape
    assert "output: bucket (reset" in repr(limit)


def test_a_reading_whose_reset_is_a_moment_counts_every_request_sent_before_it() -> None:
    """Anthropic's headers carry the server's count as of the answer (the reset is a moment,
    RFC 3339): the first answer of a burst already counts the whole burst. Read against its
    own request (as an OpenAI reading, counted when the request arrived, is), the rest of the
    burst would be counted twice: 2,800 tokens below the server, a bucket empty for a minute."""
    from llmguard._admission.ratelimit.window import Quota, Window

    quota = Quota(3_000, 60.5, True, learn=True, margin=0.5, part="output")
    read = {}
    for moment in (True, False):
        window = Window((quota,))
        burst = [window.add(0.0, 200) for _ in range(15)]
        window.cap(2.0, True, 236, 55.0, burst[0], 3_000, 0.0, as_of_now=moment)
        read[moment] = window.available(2.0, True)
    assert read == {True: 99, False: 0}
