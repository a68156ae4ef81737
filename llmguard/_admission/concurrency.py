"""The ``ConcurrencyLimit`` layer: at most ``limit`` calls in flight, around any :class:`Limiter`.

Why not ``asyncio.Semaphore`` or anyio's ``CapacityLimiter``: see ``limiter.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from types import CoroutineType
from typing import Any

from .._core.call import Call, loop_of
from .._core.check import admission as check_admission
from .._core.errors import AdmissionError
from .._core.layer import Handler, invoke
from .._core.public import public
from .._core.stream import Stream, is_stream_result
from .limiter import ConcurrencyLimiter, Limiter

__all__ = ["ConcurrencyLimit"]


def _queue_of(limiter: Any) -> Callable[..., Any] | None:
    """The limiter's ``enqueue`` (with ``withdraw``), when its ``acquire`` is the one built on
    them: a subclass that overrides ``acquire`` alone is always waited through it."""
    if not callable(getattr(limiter, "enqueue", None)) or not callable(
            getattr(limiter, "withdraw", None)):
        return None
    mro = type(limiter).__mro__
    defines = [next((cls for cls in mro if name in vars(cls)), None)
               for name in ("enqueue", "acquire")]
    return limiter.enqueue if defines[0] is defines[1] else None


def _releaser(limiter: Any) -> Callable[[BaseException | None], None]:
    """A streamed answer's end: release the permit. Made here, not as a lambda in
    ``__call__``, whose frame would then hold ``limiter`` in a cell on every call."""
    return lambda _error: limiter.release()


@public
class ConcurrencyLimit:
    """Layer: at most ``limit`` calls in flight, with priorities and per-key fairness.

    ``limit`` is a number or an existing :class:`Limiter` (to share one limiter, or to let an
    adaptive algorithm resize it): a :class:`ConcurrencyLimiter`, a
    ``llmguard.backends.redis.RedisConcurrencyLimiter``, or your own (see :class:`Limiter` for
    the contract). ``priority(*args, **kwargs) -> int`` (higher first) and
    ``key(*args, **kwargs) -> Hashable`` (e.g. the tenant) are read from the guarded function's
    arguments; without them the layer uses ``call.priority`` / ``call.partition`` as set by an
    outer layer. Waiting keys are served round-robin, FIFO within a (priority, key).
    """

    __slots__ = ("limiter", "_priority", "_key", "_try_acquire", "_enqueue")

    #: A call let go without a wait runs ``Attempt.deferred`` (an outer RateLimit's reservation
    #: left to when the call leaves this queue: ``ratelimit/held.py``); ``compose`` tells it.
    takes_deferred = True

    def __init__(
        self,
        limit: int | Limiter,
        *,
        max_queue: int | None = None,
        max_wait: float | None = None,
        priority: Callable[..., int] | None = None,
        key: Callable[..., Hashable] | None = None,
    ) -> None:
        for name, fn in (("priority", priority), ("key", key)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable on the call's arguments, got {fn!r}")
        if hasattr(limit, "acquire") and hasattr(limit, "release"):  # a (possibly shared) limiter
            if max_queue is not None or max_wait is not None:
                raise ValueError("set max_queue and max_wait on the ConcurrencyLimiter you pass")
            #: The limiter holding the permits (shared, resizable).
            self.limiter = limit
        else:
            self.limiter = ConcurrencyLimiter(limit, max_queue=max_queue, max_wait=max_wait)
        self._priority = priority
        self._key = key
        #: The limiter's synchronous fast path (``try_acquire()``, optional beyond the Limiter
        #: protocol), used when the call's priority and partition are the defaults.
        fast = getattr(self.limiter, "try_acquire", None)
        self._try_acquire = fast if callable(fast) and priority is None and key is None else None
        #: The limiter's queue without a coroutine (``enqueue()``/``withdraw()``, optional
        #: beyond the Limiter protocol): a queued call then awaits the future itself.
        self._enqueue = _queue_of(self.limiter)

    def _admission(self, call: Call) -> tuple[int, Hashable]:
        """The call's (priority, partition): from the callables if given, else from the call.

        A value of the wrong type is a ``TypeError`` for this call alone, raised before any
        permit is taken (a limiter handed ``None`` or a list would fail inside its queue)."""
        if self._priority is None and self._key is None:  # the call's own, of the common
            priority, partition = call.priority or 0, call.partition  # types: nothing to check
            if type(priority) is int and (partition is None or type(partition) is str):
                return priority, partition  # (every queued call under ``gather``)
        if self._priority is not None:
            priority = self._priority(*call.args, **call.kwargs)
        else:
            priority = call.priority or 0
        if self._key is not None:
            partition = self._key(*call.args, **call.kwargs)
        else:
            partition = call.partition
        source = "" if self._priority is None and self._key is None else (
            f" (from ConcurrencyLimit(priority={self._priority!r}, key={self._key!r}))")
        check_admission(priority, partition, source)
        return priority, partition

    #: How this layer names itself in ``call.record`` (``delayed_by``, ``rejected_by``).
    _wait_label = "concurrency_limit"

    def _admit(self, call: Call) -> tuple[int, Hashable] | None:
        """None when the call took a free permit synchronously (nobody waits), with no clock
        read: its own class and a partition of a type always hashable (the default, or, the
        limiter's ``acquire`` being the one built on ``enqueue``, which takes a free permit the
        same way, a tenant's name: the gateway's calls). Nobody is served before it, and it
        did not wait: an outer rate limit does not count it again (``Call.waited``). Else the
        (priority, partition) it waits with (:meth:`_admission`; those types need no check)."""
        partition, take = call.partition, self._try_acquire
        if take is not None and (partition is None or type(partition) is str) and (
                call.priority is None or type(call.priority) is int):
            if (partition is None or self._enqueue is not None) and take():
                return None
            return call.priority or 0, partition  # (every queued call under ``gather``)
        return self._admission(call)

    async def _acquire(self, call: Call) -> None:
        """Take a permit for the call (its priority and partition), noting any admission wait."""
        if (admission := self._admit(call)) is None:
            if call.current.deferred is not None:
                await self._deferred(call)
            return
        priority, partition = admission
        loop = call.loop or loop_of(call)
        started = loop.time()
        limiter = self.limiter
        try:
            await self._queued(call, priority, partition)
        except AdmissionError as exc:  # queue full, or max_wait passed
            raise call.rejected(self._wait_label, exc)
        waited = loop.time() - started
        # let go at once, it is counted again only when its reservation gave way meanwhile
        if waited > 0 or call.queueing(False):
            try:  # an outer rate limit counts the call again now; it may wait or refuse
                pending = call.after_wait(waited, self._wait_label)  # (``waited``, no coroutine)
                if pending is not None:
                    await pending
            except BaseException:
                limiter.release()
                raise

    async def _deferred(self, call: Call) -> None:
        """Let go at once, the call's outer rate limit reserves now (it deferred to us)."""
        try:
            pending = call.current.deferred()  # type: ignore[misc]
            if pending is not None:
                await pending
        except BaseException:
            self.limiter.release()
            raise

    async def _queued(self, call: Call, priority: int, partition: Hashable) -> None:
        """Wait for a permit: in the limiter's ``acquire``, or where it can (``enqueue``, no
        ``max_wait``), on the future it queued; the call told it waits (``Call.queueing``)."""
        limiter = self.limiter
        if self._enqueue is None or limiter.max_wait is not None:
            call.queueing()  # (the limiter's own slow path: it may still grant at once)
            await limiter.acquire(priority=priority, partition=partition)
        elif (queued := self._enqueue(priority, partition)) is not None:
            future, place = queued
            del queued
            call.queueing()
            try:
                await future
            except BaseException:
                limiter.withdraw(future, place)
                raise

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        limiter = self.limiter
        # _acquire and _queued, inlined: a queued call then holds one coroutine frame here,
        # not three (no acquire() frame either, with the in-process limiter).
        if (admission := self._admit(call)) is not None:
            priority, partition = admission
            del admission
            loop = call.loop or loop_of(call)
            started = loop.time()
            try:
                if self._enqueue is None or limiter.max_wait is not None:
                    call.queueing()  # (the limiter's own slow path: it may still grant at once)
                    await limiter.acquire(priority=priority, partition=partition)
                elif (queued := self._enqueue(priority, partition)) is not None:
                    future, place = queued
                    del queued  # not held while waiting (64 bytes a waiter)
                    # an outer rate limit's reservation is not at the provider while it waits
                    call.queueing()
                    try:
                        await future  # here: a queued call holds no acquire() frame
                    except BaseException:
                        limiter.withdraw(future, place)
                        raise
            except AdmissionError as exc:  # queue full, or max_wait passed
                raise call.rejected(self._wait_label, exc)
            waited = loop.time() - started
            # let go at once, it is counted again only when its reservation gave way meanwhile
            if waited > 0 or call.queueing(False):
                try:  # an outer rate limit counts the call again now; it may wait or refuse
                    pending = call.after_wait(waited, self._wait_label)  # (no coroutine)
                    if pending is not None:
                        await pending
                except BaseException:
                    limiter.release()
                    raise
        elif call.current.deferred is not None:  # an outer rate limit reserves now
            await self._deferred(call)
        try:
            if call_next is invoke:  # the provider itself (innermost): ``invoke`` written out,
                call.mark_sent()  # a coroutine frame less per call
                result = call.fn(*call.args, **call.kwargs)
                # (a coroutine, answering a dict: what an async def making a JSON call gives,
                # told apart without ``is_stream_result``'s frame)
                if type(result) is CoroutineType or not is_stream_result(result):
                    result = await result
                if type(result) is not dict and is_stream_result(result) and not isinstance(
                        result, Stream):
                    result = await Stream.start(result)
            else:
                result = await call_next(call)
        except BaseException:
            limiter.release()
            raise
        if isinstance(result, Stream):
            result.defer(_releaser(limiter))
        else:
            limiter.release()
        return result

    def statistics(self) -> Any:
        return self.limiter.statistics()

    def __repr__(self) -> str:
        return f"<ConcurrencyLimit {self.limiter!r}>"
