"""Shared fixtures. Async tests run under looptime's virtual clock (see pyproject addopts)."""

import gc
import os
import sys
import uuid

import pytest
from hypothesis import settings

# No property test may depend on how fast the machine is: hypothesis's default 200 ms deadline
# per example failed a histogram property on a loaded 2-core machine.
settings.register_profile("llmguard", deadline=None)
settings.load_profile("llmguard")

# litellm fetches its cost map from GitHub at import, retrying for seconds offline: every test
# and every process a test starts uses the copy litellm ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


#: Test directories whose virtual-time tests run every call in the test's own loop: no socket,
#: process or thread the loop waits on (a test there that has one sets its own ``noop_cycles``).
IN_MEMORY = {"admission", "invariants", "routing"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One idle loop turn before each jump of virtual time in the in-memory directories, not
    looptime's 42: an idle turn only polls for I/O (no callback is ready, the clock stands
    still), which nothing outside the loop can bring there, so every test runs the same
    callbacks at the same virtual times, for 20-40% less CPU (60 s of the suite's ~540)."""
    for item in items:
        if item.path.parent.name in IN_MEMORY and not any(
                "noop_cycles" in marker.kwargs for marker in item.iter_markers("looptime")):
            item.add_marker(pytest.mark.looptime(noop_cycles=1))


_modules_when_frozen = [0]


@pytest.fixture(autouse=True)
def _freeze_what_imports_loaded():
    """The suite loads litellm, Ray, the SDKs, OpenTelemetry: over half a million objects that
    live for the session, which every full collection (the tests' ``gc.collect()``, the
    collector's own passes) walked again, seconds a test on a loaded machine. When the loaded
    modules changed, collect once and move what is alive to the permanent generation
    (``gc.freeze``): later collections walk only what tests make."""
    if len(sys.modules) != _modules_when_frozen[0]:
        gc.collect()
        gc.freeze()
        _modules_when_frozen[0] = len(sys.modules)
    yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis the redis backend tests run against (``REDIS_URL``, default the local one).

    Skips when nothing answers, unless ``LLMGUARD_REQUIRE_REDIS=1`` (CI), where it fails.
    """
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:
        reason = f"no Redis answers at REDIS_URL={url} ({type(exc).__name__}: {exc})"
        if os.environ.get("LLMGUARD_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason}; LLMGUARD_REQUIRE_REDIS=1 requires it")
        pytest.skip(f"{reason}; start redis-server or set REDIS_URL to run these tests")
    return url


@pytest.fixture
def redis_prefix(redis_url: str):
    """A key prefix unique to this test; its keys are deleted afterwards."""
    import redis

    prefix = f"llmguard-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    names = list(client.scan_iter(match=prefix + "*"))
    if names:
        client.delete(*names)
    client.close()
