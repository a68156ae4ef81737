"""The connection, the timeout on every command and the on_error policy shared by every object."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..._core.cancel import honouring_cancel
from ..._core.check import number, text
from ..._core.errors import BackendUnavailable
from ..._core.redact import redact_url
from ._fence import Marks
from ._kept import KeptWrites

__all__ = ["Connection", "logger", "outage"]

logger = logging.getLogger("llmguard.redis")

#: Seconds to stay on local limits after a failed command before trying Redis again, so an
#: outage costs one timeout per interval, not one per call.
RETRY_INTERVAL = 1.0

#: The accepted range of a command's ``timeout`` seconds.
MIN_TIMEOUT, MAX_TIMEOUT = 0.01, 3600.0

#: Background writes (reconciliations, refunds, header readings) sent at once, per connection.
MAX_WRITES = 32


def outage(exc: BaseException) -> bool:
    """True when ``exc`` means Redis cannot be reached or cannot serve now (a connection
    error, a timeout, a server still loading its data or failing over), not that it refused
    the command."""
    if isinstance(exc, (TimeoutError, OSError)):
        return True
    import redis.exceptions as errors

    transient = tuple(getattr(errors, name) for name in (
        "ConnectionError", "TimeoutError", "BusyLoadingError", "ReadOnlyError",
        "ClusterDownError", "TryAgainError", "MasterDownError") if hasattr(errors, name))
    return isinstance(exc, transient)


class Connection(KeptWrites):
    """A lazily created ``redis.asyncio.Redis`` client plus the failure policy.

    ``call(script, keys, args)`` runs a Lua script (EVALSHA, loading it on NOSCRIPT) under
    ``timeout``. On a Redis error or timeout it raises :class:`BackendUnavailable` when
    ``on_error="fail"``; with ``"local"`` it logs one warning per outage and returns None, and
    the caller uses its local fallback. ``spawn`` runs a write in the background (for the
    non-blocking methods that run on cleanup paths) and keeps a reference until it ends.
    """

    __slots__ = ("url", "shown_url", "prefix", "on_error", "timeout", "id", "marks", "_redis",
                 "_scripts", "_tasks", "_kept", "_trying", "_batch", "_closing", "_writing",
                 "_down_until", "_outage", "errors", "loops", "flushers")

    def __init__(self, url: str, prefix: str, on_error: str, timeout: float) -> None:
        example = "; e.g. 'redis://127.0.0.1:6379/0'"
        if "://" not in text("url", url, hint=example):
            raise ValueError(f"url must be a Redis URL{example}, got {redact_url(url)!r}")
        text("prefix", prefix, hint=" (a key namespace)")
        if on_error not in ("local", "fail"):
            raise ValueError(f"on_error must be 'local' (fall back to per-process limits) or "
                             f"'fail' (raise BackendUnavailable), got {on_error!r}")
        # A command needs a round trip: below 10 ms every command "times out" on a busy
        # machine and the shared limits silently go local; above an hour nothing falls back.
        number("timeout", timeout, low=MIN_TIMEOUT, low_open=False, high=MAX_TIMEOUT,
               unit=" of seconds", hint="; e.g. timeout=0.5")
        self.url, self.prefix, self.on_error, self.timeout = url, prefix, on_error, float(timeout)
        #: The url as printed (logs, errors, repr): its password hidden.
        self.shown_url = redact_url(url)
        #: Unique per process and object: lease ids and tickets never collide across processes.
        self.id = f"{os.getpid()}.{secrets.token_hex(4)}"
        #: The restart markers this process last saw (``_fence``).
        self.marks = Marks(self.id)
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Writes retried until they land (``keep``); ``_closing``: aclose() began, no more.
        self._kept: set[asyncio.Task[Any]] = set()
        #: Each task of kept writes until their first attempts end, and what ``landed`` waits
        #: on for it then (a future, made when it waits; None: none made).
        self._trying: dict[asyncio.Task[Any], asyncio.Future[None] | None] = {}
        #: The kept writes of this loop turn, and their task (not started yet), if any.
        self._batch: tuple[list[Any], asyncio.Task[Any]] | None = None
        self._closing = False
        # Background writes in progress at most: redis-py's pool refuses a command beyond its
        # 100 connections (MaxConnectionsError, an outage to us), and a burst of answers
        # settles as many reservations at once (200 answers within a millisecond sent every
        # process to its local limits); the rest wait here, in order, leaving room for
        # reservations. Made in the first write (a Semaphore binds to the running loop).
        self._writing: asyncio.Semaphore | None = None
        self._down_until, self._outage = 0.0, False
        #: Commands that failed (timeouts and errors).
        self.errors = 0
        #: Background loops (circuit followers) that run until aclose() cancels them.
        self.loops: set[asyncio.Task[Any]] = set()
        #: Called first by aclose(): writes queued to be sent later go now (``_settlements``).
        self.flushers: list[Callable[[], None]] = []

    @property
    def redis(self) -> Any:
        """The redis-py asyncio client (imported here: ``import llmguard`` never imports redis)."""
        if self._redis is None:
            import redis.asyncio

            # No socket_timeout: run() bounds every command with asyncio.timeout. With one,
            # redis-py sends each command under asyncio.wait_for, which on Python 3.11 returns
            # the result and drops a cancellation arriving as the write completes (CPython
            # gh-86296): a cancelled caller ran on, and aclose() waited forever for a
            # background loop that had swallowed its cancel (#31's hanging shared-slot test).
            self._redis = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=None, socket_connect_timeout=self.timeout,
            )
        return self._redis

    def down(self) -> bool:
        """True while a recent failure sends ``on_error='local'`` calls to local limits."""
        return self._down_until > asyncio.get_running_loop().time()

    def retry_interval(self) -> float:
        """Seconds between a kept write's attempts (``RETRY_INTERVAL``, read at each one)."""
        return RETRY_INTERVAL

    async def call(self, script: str, keys: list[str], args: list[Any], what: str) -> Any:
        """Run a Lua script (EVALSHA; redis-py loads it on NOSCRIPT, e.g. after a restart)."""
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.redis.register_script(script)
        return await self.run(lambda: registered(keys=keys, args=args), what)

    async def run(self, command: Callable[[], Awaitable[Any]], what: str) -> Any:
        """``await command()`` under the timeout and the on_error policy (None: failed, local).

        Only an outage (no connection, a timeout, a server loading or failing over) is handed
        to the on_error policy. A command Redis refuses (an ACL's NOPERM, a script error, a
        write refused at maxmemory) is raised with a note: the server is up, so falling back
        to local limits would only hide the problem, and one cache write refused used to
        switch every shared quota of the connection to per-process limits."""
        try:
            async with asyncio.timeout(self.timeout):
                result = await honouring_cancel(command())
        except Exception as exc:  # redis errors, OSError, our TimeoutError: never CancelledError
            if not outage(exc):
                self.errors += 1
                exc.add_note(
                    f"Redis at {self.shown_url} refused a command while {what}; this is not an "
                    "outage, so llmguard does not fall back to local limits: check the user's "
                    "ACL (llmguard runs Lua scripts: EVALSHA, SCRIPT LOAD), maxmemory and the "
                    "server log")
                raise
            return self.failed(exc, what)
        if self._outage:
            self._outage = False
            logger.warning("llmguard: Redis at %s answers again; shared limits resume", self.shown_url)
        return result

    def failed(self, exc: BaseException, what: str) -> None:
        self.errors += 1
        message = (
            f"Redis at {self.shown_url} failed while {what} ({type(exc).__name__}: {redact_url(str(exc)) or 'timed out'}, "
            f"timeout={self.timeout:g} s)"
        )
        if self.on_error == "fail":
            raise BackendUnavailable(
                f"{message}; on_error='fail' refuses calls while Redis is unavailable: check "
                "the server and url, raise timeout, or pass on_error='local' to fall back to "
                "per-process limits"
            ) from exc
        self._down_until = asyncio.get_running_loop().time() + RETRY_INTERVAL
        if not self._outage:  # once per outage, not once per call
            self._outage = True
            logger.warning("llmguard: %s; falling back to local limits in this process until "
                           "it answers (on_error='local')", message)
        return None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a write in the background: the caller (a cleanup path) must not await it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def write(self, script: str, keys: list[str], args: list[Any], what: str) -> bool:
        """Run a script in the background (spawned): False when an outage lost it (a script
        ``keep`` writes returns a value: None is the on_error="local" policy's)."""
        if self._writing is None:
            self._writing = asyncio.Semaphore(MAX_WRITES)
        try:
            async with self._writing:
                return await self.call(script, keys, args, what) is not None
        except BackendUnavailable:
            return False  # a background write has no caller to fail; failed() counted it
        except Exception as exc:  # refused (counted by run): no caller to fail, so say it
            logger.warning("llmguard: %s: %s", type(exc).__name__, "; ".join(
                [redact_url(str(exc)), *getattr(exc, "__notes__", ())]))
            return True

    async def aclose(self) -> None:
        """Stop background loops, wait for pending writes (a kept one tried once more at
        most), then close the connections."""
        self._closing = True
        for flush in self.flushers:
            flush()
        loops = list(self.loops)
        for task in loops:
            task.cancel()
        self.loops.clear()
        if loops:  # let them finish their cleanup (a budget listener closes its subscription)
            await asyncio.gather(*loops, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kept()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._scripts.clear()
        self._closing = False  # (a connection closed is opened again by its next command)
