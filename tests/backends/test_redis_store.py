"""RedisStore against the real Redis: safe serialisation, size limit, TTL, cross-process
single-flight. Real time (Redis expires keys on its clock): looptime off, sub-second TTLs."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._cache.store import MISSING
from llmguard.backends.redis import RedisBackend, RedisStore, ValueTooLarge

pytestmark = pytest.mark.looptime(False)


@pytest.fixture
async def backend(redis_url, redis_prefix):
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    yield backend
    await backend.aclose()


async def test_json_round_trip_and_ttl(backend):
    """A JSON value comes back equal; after its TTL Redis has dropped it."""
    store = RedisStore(backend, lock_ttl=0)
    await store.set("k", {"text": "hi", "n": [1, 2]}, 0.2)
    assert await store.get("k") == {"text": "hi", "n": [1, 2]}
    await asyncio.sleep(0.3)
    assert await store.get("k") is MISSING


_atoms = (st.none() | st.booleans() | st.integers() | st.text(max_size=8)
          | st.floats(allow_nan=False) | st.binary(max_size=8))
_keys = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.tuples(st.integers())
_values = st.recursive(_atoms, lambda inner: (
    st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(_keys, inner, max_size=4)
    | st.dictionaries(st.just("__llmguard__") | st.text(max_size=3), inner, max_size=2)
    | st.frozensets(_keys, max_size=3) | st.sets(st.integers(), max_size=3)), max_leaves=12)


def _typed(value):
    """``value`` with the type of every part spelled out: equal means unchanged."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(map(repr, value)))
    return (type(value).__name__, value)


@settings(max_examples=150, deadline=None)
@given(value=_values)
def test_a_hit_returns_what_the_miss_stored_unchanged(value):
    """#35 item 7: the default serializer keeps int keys, tuples, sets and bytes as they were
    (plain JSON turned {1: 0.5} into {"1": 0.5} and tuples into lists), for any nesting."""
    from llmguard.backends.redis._codec import dumps, loads

    assert _typed(loads(dumps(value))) == _typed(value)


async def test_a_cached_answer_comes_back_from_redis_with_its_types(backend):
    """Through a Cache on a RedisStore: the hit equals the miss's answer, types included."""
    answer = {1: 0.5, "scores": (0.1, 0.9), "ids": {3, 4}, "raw": b"\x00\xff", "n": None}
    calls = 0

    async def classify(text: str):
        nonlocal calls
        calls += 1
        return dict(answer)

    guarded = lg.guard(lg.Cache(ttl=60, store=RedisStore(backend, lock_ttl=0)))(classify)
    assert await guarded("x") == answer
    hit = await guarded("x")
    assert calls == 1 and _typed(hit) == _typed(answer)


async def test_unserialisable_and_oversized_values_are_not_stored(backend):
    """JSON refuses an arbitrary object (TypeError) and a value over max_bytes raises
    ValueTooLarge naming the limit; neither is stored, and the fill lock is released."""
    store = RedisStore(backend, max_bytes=64)
    assert await store.get("a") is MISSING  # takes the fill lock
    with pytest.raises(TypeError):
        await store.set("a", object(), 5)
    with pytest.raises(ValueTooLarge, match="max_bytes=64"):
        await store.set("b", "x" * 100, 5)
    assert store.statistics().too_large == 1
    await backend.connection.aclose()  # the background unlock has run
    assert await RedisStore(backend, lock_ttl=0).get("a") is MISSING
    assert not store._locks


async def test_pickle_only_on_request(backend):
    """serializer='pickle' stores any picklable object; a bad serializer is refused early."""
    store = RedisStore(backend, serializer="pickle", lock_ttl=0)
    await store.set("k", {1, 2}, 5)
    assert await store.get("k") == {1, 2}
    with pytest.raises(ValueError, match="serializer"):
        RedisStore(backend, serializer="yaml")


async def test_single_flight_across_processes(redis_url, redis_prefix, backend):
    """Two caches on separate backends (two processes) asked the same thing at once call the
    provider once: the second waits for the first's value instead."""
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    calls = 0

    async def provider(prompt):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return {"answer": prompt}

    a_store, b_store = RedisStore(backend), RedisStore(other)
    a = lg.guard(lg.Cache(ttl=5, store=a_store))(provider)
    b = lg.guard(lg.Cache(ttl=5, store=b_store))(provider)
    assert await asyncio.gather(a("q"), b("q")) == [{"answer": "q"}] * 2
    assert calls == 1
    # whichever took the fill lock first, the other waited for its value
    assert a_store.statistics().coalesced + b_store.statistics().coalesced == 1
    await other.aclose()


async def test_failed_fills_leave_a_bounded_lock_record(backend):
    """Each miss takes a fill lock that a failing call never releases (nothing is stored): with
    1,000 distinct prompts failing, this process keeps a record only of the locks not lapsed
    yet, and a key whose lock lapsed is filled by the next call as usual."""
    store = RedisStore(backend, lock_ttl=0.005)
    cache = lg.Cache(ttl=60, store=store)
    fail = True

    @lg.guard(cache)
    async def ask(prompt: int) -> str:
        if fail:
            raise ConnectionError("provider down")
        return f"answer {prompt}"

    most = 0
    for prompt in range(1000):
        with pytest.raises(ConnectionError):
            await ask(prompt)
        most = max(most, len(store._locks))
    assert most < 300  # about twice the locks taken in the last 5 ms
    await asyncio.sleep(0.01)  # the last locks lapse
    fail = False
    assert await ask(0) == "answer 0"  # its old lock lapsed: this call leads and stores
    assert store.statistics().size == 1 and await ask(0) == "answer 0"
    assert store.statistics().hits == 1


async def test_a_failed_fill_releases_its_lock_at_once(redis_url, redis_prefix, backend):
    """When the filling process's call fails, its Cache abandons the fill: the lock is released
    at once, so another process leads the next fill instead of waiting out ``lock_ttl``."""
    other = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    a_store, b_store = RedisStore(backend, lock_ttl=3), RedisStore(other, lock_ttl=3)

    async def failing(prompt):
        raise ConnectionError("provider down")

    with pytest.raises(ConnectionError):
        await lg.guard(lg.Cache(ttl=5, store=a_store))(failing)("q")
    await backend.connection.aclose()  # waits for the background unlock
    key = lg.Cache(ttl=5).key_for(failing, ("q",), {})
    assert await b_store.get(key) is MISSING
    assert b_store._filling(key)  # b took the lock: a's was released, not left to lapse
    assert b_store.statistics().coalesced == 0
    await other.aclose()


async def test_clear_removes_only_its_namespace(backend):
    """clear() deletes this namespace's entries and leaves another namespace's alone."""
    mine, theirs = RedisStore(backend, namespace="a", lock_ttl=0), RedisStore(
        backend, namespace="b", lock_ttl=0)
    await mine.set("k", 1, 5)
    await theirs.set("k", 2, 5)
    await mine.clear()
    assert await mine.get("k") is MISSING
    assert await theirs.get("k") == 2


def test_construction_errors():
    """Bad arguments fail at construction with the argument's name."""
    with pytest.raises(TypeError, match="backend"):
        RedisStore("redis://x")
    with pytest.raises(ValueError, match="max_bytes"):
        RedisStore(RedisBackend(), max_bytes=0)
    with pytest.raises(ValueError, match="lock_ttl"):
        RedisStore(RedisBackend(), lock_ttl=-1)


async def test_namespaces_never_read_or_clear_each_other(redis_url, redis_prefix):
    """Issue 21 #6: tenants' namespaces are disjoint: clearing ``"a"`` keeps ``"a:b"``,
    clearing ``"t[12]"`` keeps ``"t1"`` (no glob), and key ``"b:x"`` in ``"a"`` is not key
    ``"x"`` of ``"a:b"``; a key named like a lock is an ordinary entry."""
    backend = RedisBackend(redis_url, prefix=redis_prefix, timeout=30.0)
    stores = {ns: RedisStore(backend, namespace=ns, lock_ttl=0) for ns in ("a", "a:b", "t[12]", "t1")}
    await stores["a"].set("b:x", "from a", 60)
    await stores["a"].set("x:lock", "a lock-like key", 60)
    await stores["a:b"].set("x", "from a:b", 60)
    await stores["t[12]"].set("k", "from t[12]", 60)
    await stores["t1"].set("k", "from t1", 60)
    assert await stores["a:b"].get("x") == "from a:b" and await stores["a"].get("b:x") == "from a"
    assert await stores["a"].get("x:lock") == "a lock-like key"
    await stores["a"].clear()
    await stores["t[12]"].clear()
    assert await stores["a:b"].get("x") == "from a:b" and await stores["t1"].get("k") == "from t1"
    assert await stores["a"].get("b:x") is MISSING and await stores["t[12]"].get("k") is MISSING
    await backend.aclose()
