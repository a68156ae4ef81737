"""Fixtures of the admission tests."""

import inspect

import pytest

from llmguard.testing import virtual_wall_clock


@pytest.fixture(autouse=True)
def pinned_wall_clock(request: pytest.FixtureRequest):
    """In virtual time, clock minutes (a proxy's, a fixed window's boundary, the one a rate
    limit supposes) start at loop time 0 whatever the time of day: unpinned, the wall clock's
    offset from the loop's moved the supposed boundaries from run to run, and a test near
    one passed or failed by when it ran. Tests in real time (``looptime(False)``, or not
    async) keep the real clock: they compare it with ``time.time()``."""
    marker = request.node.get_closest_marker("looptime")
    real = marker is not None and marker.args and marker.args[0] is False
    if real or not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        yield
        return
    with virtual_wall_clock():
        yield
