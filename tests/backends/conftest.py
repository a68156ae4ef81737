"""Fixtures of the backend tests."""

import pytest
from redis_server import Server

from llmguard.backends.redis import _client


@pytest.fixture
def server(monkeypatch):
    """A redis-server of the test's own (:class:`redis_server.Server`: to kill, restart or pause;
    SIGKILL ends it paused too), with Redis retried soon after a failure."""
    monkeypatch.setattr(_client, "RETRY_INTERVAL", 0.05)
    server = Server()
    server.start()
    yield server
    server.stop()
