"""Where RateLimit's quota state lives: the backend protocol and the in-memory backend.

:class:`RateLimitBackend` is what a shared store implements (``llmguard.backends.redis``);
:class:`MemoryBackend` keeps one sliding-window log (``_window.Window``) per key in this process.
"""

from __future__ import annotations

from asyncio import get_running_loop
from collections.abc import Hashable
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..._core import clock
from ..._core.public import public
from ..._core.sweep import SWEEP_AT, sweep
from .charge import Charge
from .latency import retime
from .move import move
from .queued import MarksQueued
from .window import Entry, Quota, Window

__all__ = ["LearningBackend", "MemoryBackend", "RateLimitBackend", "TakesNow"]


@public
class RateLimitBackend(Protocol):
    """Where quota state lives. ``key`` is the partition (None without ``key=``); ``quotas`` is
    the layer's tuple of :class:`Quota` (pass them to the store, e.g. as Lua script arguments).
    Durations are relative seconds so a remote backend can use its own (server) clock.

    Only ``reserve`` is async. The other methods must not block: they run on cleanup paths,
    including cancellation, where awaiting is unsafe; a remote backend schedules the write (a
    task it keeps a reference to) and may apply it late, which errs on the side of waiting.
    """

    async def reserve(self, key: Hashable, quotas: tuple[Quota, ...],
                      tokens: int) -> tuple[float, Any]:
        """Atomically admit one request of ``tokens`` if every quota has room now.

        Returns ``(0.0, ticket)`` when admitted (the ticket, any value but None, identifies the
        reservation for ``reconcile``/``refund``), else ``(wait, None)`` with nothing recorded: ``wait`` is the
        earliest number of seconds after which it could fit (including any pause and cap). The
        layer keeps callers in order (priority, tenants in turn) and calls again after ``wait``.
        """
        ...

    def reconcile(self, key: Hashable, ticket: Any, tokens: int) -> None:
        """Replace the reservation's token count with ``tokens`` (the actual usage).

        With quotas that refill continuously (``Quota.continuous``) the layer calls it for every
        reservation it does not refund, even with ``tokens`` unchanged: a bucket settles each
        reservation once (``llmguard._admission.ratelimit.bucket.settle``)."""
        ...

    def refund(self, key: Hashable, ticket: Any) -> None:
        """Remove the reservation entirely (the call never reached the provider)."""
        ...

    def pause(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float) -> None:
        """Admit nothing for ``key`` for ``seconds`` (never shortens an existing pause)."""
        ...

    def cap(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
            reset: float) -> None:
        """The provider reports ``remaining`` requests (or tokens) until ``reset`` seconds from
        now: admit no more than that until then (the quotas still apply)."""
        ...

    def headroom(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int, int, float]:
        """``(requests available, tokens available, seconds of pause left)`` now."""
        ...


@runtime_checkable
class TakesNow(Protocol):
    """A backend that can reserve without suspending (its state is in this process): RateLimit
    calls ``take`` when nobody waits, and only awaits ``reserve`` otherwise. ``take`` returns the
    ticket if every quota has room now, else None with nothing recorded."""

    def take(self, key: Hashable, quotas: tuple[Quota, ...], tokens: int) -> Any: ...


class LearningBackend(Protocol):
    """What a backend implements to pace like the server's limiter (``refill="auto"``) and to
    read headers against the request they describe; a backend without it gets ``cap`` and
    ``pause`` (headers then tighten the quotas, nothing is learned)."""

    def observe(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
                reset: float | None, *, ticket: Any = None, limit: int | None = None,
                as_of_now: bool = False) -> None:
        """The provider reports ``remaining`` requests (or tokens) as it counted the request
        of ``ticket`` (None: unknown; ``as_of_now``: in the answer to it, as of now, every
        request sent before counted), until ``reset`` seconds from now (None: it does not
        say), of ``limit`` (None: it does not say). Must not block."""
        ...

    def refused(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float, *,
                ticket: Any = None, named: Any = None) -> None:
        """The provider answered the request of ``ticket`` with a 429 asking for ``seconds``
        of pause (``pause`` plus what the refusal teaches). ``named``: the quota its message
        names (a ``named.Named``; passed only when it names one). Called before the ticket is
        settled. Must not block."""
        ...

    def shape(self, key: Hashable, quotas: tuple[Quota, ...]) -> str:
        """What was learned about the server's limiter for ``key``, and why ("" if nothing)."""
        ...

    def limits(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int | None, int | None]:
        """The requests and tokens limits in force for ``key`` (learned ones, else the
        quotas'; None: no such quota)."""
        ...

    def spent(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """Count every quota of ``key`` as used up now (``RateLimit.assume_spent``)."""
        ...


@public
class MemoryBackend(MarksQueued):
    """The default backend: one sliding-window log per key in this process, loop time.

    Keys come and go (a ``key=`` per user or tenant), so a key whose window holds nothing any
    more is forgotten: whenever the number of keys has doubled since the last sweep, every idle
    window is dropped. A sweep costs one pass over the keys and happens after as many new keys,
    so it adds O(1) per new key, and memory stays within about twice the keys active in the
    last window (a soak with 20 new users a minute grew by one window per user, forever).
    """

    __slots__ = ("_windows", "_sweep_at")
    #: Its windows' learned token charge (a shared backend's mirror: its own kind).
    charge: ClassVar[type[Charge]] = Charge

    def __init__(self) -> None:
        self._windows: dict[Hashable, Window] = {}
        self._sweep_at = SWEEP_AT

    @property
    def tracked_keys(self) -> int:
        """Keys with state held now (idle ones not swept yet included)."""
        return len(self._windows)

    def _window(self, key: Hashable, quotas: tuple[Quota, ...]) -> Window:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._sweep_at:
                # An idle window is exactly what a fresh one would be: dropping it changes nothing.
                now = clock.now()
                self._sweep_at = sweep(self._windows, lambda window: window.idle(now))
            window = self._windows[key] = Window(quotas, self.charge)
            if window.shape is not None:  # its clock minutes: the wall clock's
                window.shape.offset = clock.wall() - clock.now()
        elif window.quotas is not quotas:  # the layer's margin changed (``latency``)
            retime(window, quotas, clock.now())
        return window

    def window(self, key: Hashable, quotas: tuple[Quota, ...]) -> Window:
        """The state of ``key`` (made when missing): for a composite backend
        (``split.SplitBackend``) that checks several keys and takes from all in one step."""
        return self._window(key, quotas)

    def take(self, key: Hashable, quotas: tuple[Quota, ...], tokens: int) -> Entry | None:
        """``reserve`` without the coroutine (in memory nothing suspends): the ticket if every
        quota has room now, else None with nothing recorded. RateLimit's path when nobody waits."""
        window = self._windows.get(key)
        if window is None or window.quotas is not quotas:
            window = self._window(key, quotas)
        return window.take(get_running_loop().time(), tokens)  # in a loop: the layer's path

    def move(self, key: Hashable, quotas: tuple[Quota, ...], ticket: Entry,
             tokens: int) -> Entry | None:
        """``refund`` then ``take`` in one step (:mod:`.move`, ``MovesNow``)."""
        window = self._windows.get(key)
        if window is None or window.quotas is not quotas:  # swept, or its margin changed
            self.refund(key, ticket)
            return self.take(key, quotas, tokens)
        return move(window, get_running_loop().time(), ticket, tokens)

    async def reserve(self, key: Hashable, quotas: tuple[Quota, ...],
                      tokens: int) -> tuple[float, Any]:
        window = self._window(key, quotas)
        now = clock.now()
        ticket = window.take(now, tokens)
        return (0.0, ticket) if ticket is not None else (window.wait(now, tokens), None)

    # A window is swept only once all its entries have left every quota's window, so a ticket
    # whose window is gone (a call longer than an rps window) no longer counts anywhere.

    def reconcile(self, key: Hashable, ticket: Entry, tokens: int) -> None:
        window = self._windows.get(key)
        if window is not None:
            try:  # ``clock.now()``, in a loop (the layer's path, every settled call) written out
                now = get_running_loop().time()
            except RuntimeError:
                now = clock.now()
            window.adjust(now, ticket, tokens)

    def refund(self, key: Hashable, ticket: Entry) -> None:
        window = self._windows.get(key)
        if window is not None:
            window.adjust(clock.now(), ticket, 0, live=0)

    def pause(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float) -> None:
        window = self._window(key, quotas)
        until = clock.now() + seconds
        window.paused_until = max(window.paused_until, until)

    def cap(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
            reset: float) -> None:
        self._window(key, quotas).cap(clock.now(), tokens, remaining, reset)

    def observe(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
                reset: float | None, *, ticket: Any = None, limit: int | None = None,
                as_of_now: bool = False) -> None:
        window = self._window(key, quotas)
        ticket = ticket if isinstance(ticket, Entry) else None
        window.cap(clock.now(), tokens, remaining, reset, ticket, limit, clock.wall(), as_of_now)

    def refused(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float, *,
                ticket: Any = None, named: Any = None) -> None:
        window = self._window(key, quotas)
        ticket = ticket if isinstance(ticket, Entry) else None
        window.refused(clock.now(), ticket, seconds, clock.wall(), named)

    def unsaid(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """The server answered a request of ``key`` without any rate-limit header: until it
        says something, it may be probed (``silent``)."""
        shape = self._window(key, quotas).shape
        if shape is not None and shape.quiet is None:
            shape.quiet = True

    def spent(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """Count every quota as used up now (``RateLimit.assume_spent``)."""
        self._window(key, quotas).spent(clock.now())

    def sent(self, key: Hashable, quotas: tuple[Quota, ...], tokens: int, at: float) -> None:
        """Count a request of ``tokens`` sent at loop time ``at`` without a reservation
        (``RateLimit.assume_sent``), settled as it is."""
        window = self._window(key, quotas)
        entry = window.add(at, tokens)
        window.adjust(clock.now(), entry, entry.tokens, answered=False)

    def shape(self, key: Hashable, quotas: tuple[Quota, ...]) -> str:
        window = self._windows.get(key)
        return "" if window is None or window.shape is None else repr(window.shape)

    def limits(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int | None, int | None]:
        window = self._windows.get(key) or Window(quotas)
        return window.limit(False), window.limit(True)

    def headroom(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int, int, float]:
        window = self._windows.get(key)
        if window is None or window.quotas is not quotas:  # (as ``take``: every gateway answer)
            window = self._window(key, quotas)
        now = clock.now()
        return (window.available(now, False), window.available(now, True),
                max(0.0, window.paused_until - now))

    def __repr__(self) -> str:
        return f"<MemoryBackend keys={len(self._windows)}>"
