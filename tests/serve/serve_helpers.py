"""Shared by the gateway tests: the real uvicorn server on a free loopback port, in a thread of
this process or as a ``llmguard serve`` subprocess, and small config/request builders."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from llmguard._serve.config import default_config, load
from llmguard._serve.server import make_app

ROOT = Path(__file__).resolve().parents[2]
#: A safety net against a hung server or child, never an assertion about speed.
HANG_GUARD = 60.0
MESSAGES = [{"role": "user", "content": "hello there"}]


def chat(model: str = "fake", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def write_config(tmp_path: Path, text: str, name: str = "serve.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class ThreadServer:
    """uvicorn serving the gateway app in a background thread (its own event loop)."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app
        self.gateway = app.state.gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning",
                                                    **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        give_up = time.monotonic() + HANG_GUARD
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died at start"
            assert time.monotonic() < give_up, "the server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(HANG_GUARD)
        self.sock.close()


@contextmanager
def served(config_path: Path | None = None, **options: Any) -> Iterator[ThreadServer]:
    """The gateway for ``config_path`` (default: no config) on a free port, for the block."""
    config = load(str(config_path)) if config_path else default_config()
    with ThreadServer(make_app(config, **options)) as server:
        yield server


class ChildServer:
    """``llmguard serve`` as a subprocess on a free port; ``url`` once it listens."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmguard", "serve", "--port", "0", *args],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until it listens (or dies)
        found = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.url = found.group(1)

    def stop(self, sig: int | None = None) -> int:
        import signal

        self.proc.send_signal(sig or signal.SIGTERM)
        return self.proc.wait(HANG_GUARD)

    def output(self) -> str:
        out, err = self.proc.communicate(timeout=HANG_GUARD)
        return out + err

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG_GUARD)


class CountingUpstream:
    """Wraps a model's upstream and records the last user message of every request that
    reaches it (``gateway.models[name].upstream = CountingUpstream(...)``)."""

    def __init__(self, inner: Any, sent: list[str]) -> None:
        self.inner, self.sent = inner, sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self, request: dict[str, Any]) -> None:
        self.sent.append(request["messages"][-1]["content"])

    async def chat(self, request: dict[str, Any], *rest: Any) -> Any:
        self._count(request)
        return await self.inner.chat(request, *rest)

    def stream(self, request: dict[str, Any], *rest: Any) -> Any:
        self._count(request)
        return self.inner.stream(request, *rest)
