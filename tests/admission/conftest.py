"""Fixtures of the admission tests."""

import pytest

from llmguard.testing import virtual_wall_clock


@pytest.fixture
def pinned_wall_clock():
    """Clock minutes (a proxy's, a fixed window's boundary) start at loop time 0 whatever the
    time of day: unpinned, the wall clock's offset from the loop's moved the boundaries by a
    fraction of a second from run to run, and a test near one passed or failed by when it ran."""
    with virtual_wall_clock():
        yield
