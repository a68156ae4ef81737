"""A refund gives back every counter its admission touched, in Redis as in memory: the
property test of ``tests/admission/test_pacing.py`` (a reservation taken at any stage of a run
and refunded) run through the backend protocol against real Redis, for every refill.

Real Redis and real time (each example in a loop of its own; a key of its own, under a prefix
of its own). Headroom is what the backend reports as of its last reservation (Redis's reply),
so the comparison needs no clock: a bucket's is bounded by what it refilled meanwhile, measured.
"""

import asyncio
import itertools
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmguard._admission.ratelimit.backend import MemoryBackend
from llmguard._admission.ratelimit.window import Quota
from llmguard.backends.redis import RedisBackend

pytestmark = pytest.mark.looptime(False)

_keys = itertools.count()


def quotas_for(refill: str) -> tuple[Quota, ...]:
    """5 requests and 1,000 tokens a 60.5 s window, as the in-memory property test's."""
    learn, continuous = refill == "auto", refill == "continuous"
    return (Quota(5, 60.5, False, continuous, learn, 0.5),
            Quota(1_000, 60.5, True, continuous, learn, 0.5))


async def landed(backend) -> None:
    """Wait for the backend's background writes (readings, caps, refunds) to reach Redis."""
    connection = getattr(backend, "connection", None)
    while connection is not None and (connection._tasks or connection._trying):
        await connection.landed()


async def reserve(backend, key, quotas, tokens):
    """One reservation (its ticket, None when not admitted) and the headroom it left."""
    _, ticket = await backend.reserve(key, quotas, tokens)
    requests, free, _ = backend.headroom(key, quotas)
    return ticket, (requests, free), time.monotonic()


def is_bucket(backend, key, quotas) -> bool:
    """A bucket paces ``key``: configured (``continuous``) or learned (its mirror's shape)."""
    if quotas[0].continuous:
        return True
    local = getattr(backend, "_local", backend)
    shape = local.window(key, quotas).shape
    return shape is not None and shape.kind == "bucket"


async def refunded(make, refill: str, steps, stage: int, tokens: int) -> None:
    backend, key, quotas, held = make(), next(_keys), quotas_for(refill), []
    try:
        for i, (what, amount) in enumerate(steps):
            if i == stage:
                break
            if what == "take":
                _, ticket = await backend.reserve(key, quotas, amount)
                if ticket is not None:
                    held.append(ticket)
            elif what == "header":
                backend.observe(key, quotas, bool(amount % 2), amount % 7,
                                30.0 if amount % 3 else None,
                                ticket=held[-1] if held else None)
            elif what == "reconcile" and held:
                backend.reconcile(key, held.pop(0), amount)
            elif what == "refund" and held:
                backend.refund(key, held.pop(amount % len(held)))
            await landed(backend)
        # The first admission may learn (its reservation carries the settlements and
        # publications before it), which no refund undoes: held, the second one's compared.
        first, _, _ = await reserve(backend, key, quotas, tokens)
        if first is None:
            return
        taken, before, then = await reserve(backend, key, quotas, tokens)
        if taken is None:
            return
        backend.refund(key, taken)
        await landed(backend)
        again, after, now = await reserve(backend, key, quotas, tokens)
        if is_bucket(backend, key, quotas):
            # never more than before, but for what the bucket refilled meanwhile
            if again is not None:
                for unit, limit in enumerate(q.limit for q in quotas):
                    refill_ = math.ceil(limit / 60.5 * (now - then)) + 1
                    assert after[unit] <= before[unit] + refill_, (before, after)
        else:
            assert again is not None, "the refunded room was not given back"
            assert after == before
    finally:
        if isinstance(backend, RedisBackend):
            await backend.aclose()


STEPS = st.lists(st.tuples(st.sampled_from(["take", "header", "reconcile", "refund"]),
                           st.integers(1, 300)), max_size=12)


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_refund_gives_back_every_counter_its_admission_touched(redis_url, redis_prefix,
                                                                 where):
    """Take one reservation at any stage of a run (after admissions, header readings that cap
    or drain, reconciliations, refunds: each landed in Redis before the next step), refund it: the
    next reservation of the same tokens is admitted, and the headroom it leaves in requests
    and tokens is exactly what the refunded one left (windows, learned caps and limits, token
    reservations, the shared log and state); a bucket's (``refill="continuous"``, or a bucket
    learned) is never more than that, but for what it refilled meanwhile (refunds bounded so
    it never holds more than the provider's)."""

    def make():
        if where == "memory":
            return MemoryBackend()
        return RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)

    # random again (a fixed budget of examples a run, the cases found so far kept below):
    # derandomized after a random run found the capping case (#30), fixed since
    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @example(refill="auto", steps=[("take", 1), ("header", 74), ("refund", 1)], stage=3,
             tokens=1)
    @example(refill="auto", steps=[("take", 158), ("take", 300), ("take", 300),
                                   ("reconcile", 1), ("reconcile", 1), ("reconcile", 1),
                                   ("take", 251), ("reconcile", 1)], stage=8, tokens=1)
    @example(refill="window", steps=[("take", 100), ("reconcile", 1), ("header", 1)],
             stage=12, tokens=1)
    @given(refill=st.sampled_from(["auto", "window", "continuous"]), steps=STEPS,
           stage=st.integers(0, 12), tokens=st.integers(1, 300))
    def check(refill, steps, stage, tokens):
        asyncio.run(refunded(make, refill, steps, stage, tokens))

    check()


async def test_a_refund_after_a_capping_reading_gives_back_what_it_took_in_redis(
        redis_url, redis_prefix) -> None:
    """The case a random run of the property above found (present at 2f97f89 too): a reading
    (remaining 4, reset 30 s) that taught a fixed window capped the requests; its publication,
    landing after the reading, dropped that cap, so a refund of the request read gave it back
    (headroom (3, 996) against (2, 994)); and a refund queued before a reservation that
    published went on its own, overtaken by it. In memory exact."""
    await refunded(lambda: RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0), "auto",
                   [("take", 1), ("header", 74), ("refund", 1)], 3, 1)


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_a_refused_calls_tokens_are_given_back_as_in_memory(redis_url, redis_prefix, where):
    """A call the server refused (429) was charged none of its tokens: settled as the layer
    does (reconciled to its reservation), it holds no tokens any more, in Redis as in memory
    (main: Redis kept the refused member's reserved tokens, ``id:r:tokens``, for a window, so
    a second call of the same size found no room)."""
    backend = MemoryBackend() if where == "memory" else RedisBackend(
        redis_url, prefix=redis_prefix, timeout=30.0)
    quotas = quotas_for("auto")
    _, refused = await backend.reserve(None, quotas, 600)
    backend.refused(None, quotas, 0.001, ticket=refused)
    backend.reconcile(None, refused, 600)  # sent: the layer reconciles it to its reservation
    await landed(backend)
    await asyncio.sleep(0.1)  # the pause the 429 asked for has passed
    wait, again = await backend.reserve(None, quotas, 600)
    assert again is not None, f"the refused call's tokens still count (wait {wait})"
    requests, free, _ = backend.headroom(None, quotas)
    assert requests == 3  # the refused request itself still counts (the server saw it)
    if isinstance(backend, RedisBackend):
        await backend.aclose()


async def test_a_429_lands_before_the_settlement_a_next_reservation_carries(
        redis_url, redis_prefix):
    """Two processes fill a 3-request window and the third is refused; the refusing process
    reserves again at once, so its next reservation would carry the refused call's settlement
    (its tokens back to none) to Redis before the 429's own write: the settlement waits for
    it, and the 429 still teaches every process the limit of 2 (main: the member had been
    renamed when the 429's write looked for it; nothing was learned, nothing marked)."""
    quotas = (Quota(3, 0.31, False, learn=True, margin=0.01),
              Quota(1_000, 0.31, True, learn=True, margin=0.01))
    first = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    assert (await first.reserve(None, quotas, 10))[1] is not None
    assert (await other.reserve(None, quotas, 10))[1] is not None
    _, refused = await first.reserve(None, quotas, 10)
    first.refused(None, quotas, 0.001, ticket=refused)
    first.reconcile(None, refused, 10)
    await first.reserve(None, quotas, 10)  # at once: it carries what is queued
    await first.connection.aclose()  # the background writes have landed
    await asyncio.sleep(0.35)  # a fresh window
    admitted = [(await other.reserve(None, quotas, 10))[1] is not None for _ in range(3)]
    assert admitted == [True, True, False]
    assert other.limits(None, quotas)[0] == 2
    await first.aclose()
    await other.aclose()
