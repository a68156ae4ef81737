"""Per-attempt timeouts that never turn the caller's own cancellation into a timeout.

A plain answer has one limit. A streamed answer has three, each with its own error: time to the
first chunk (inside the pipeline, so Retry and Fallback still act), idle time between chunks and
total time (both after the answer started, raised to the consumer).
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

from .._core.attempt import with_hook, without_hook
from .._core.call import Call, loop_of
from .._core.check import number
from .._core.errors import (AdmissionTimeout, FirstChunkTimeout, StreamIdleTimeout,
                            StreamTotalTimeout, TimeoutExceeded)
from .._core.layer import Handler
from .._core.public import public
from .._core.stats import LayerStats
from .._core.stream import Stream
from .timer import Timed, TimerQueue

__all__ = ["Timeout", "TimeoutStats"]


@public
@dataclass(frozen=True, slots=True)
class TimeoutStats(LayerStats):
    calls: int
    timed_out: int


def _is_streaming(call: Call) -> bool:
    """A call that will stream: ``stream=True`` (litellm, openai) or an async generator."""
    return call.kwargs.get("stream") is True or inspect.isasyncgenfunction(call.fn)


@public
class Timeout:
    """Layer: how long the provider may take, per attempt, counted from when it is sent.

    - ``seconds``: a plain answer must arrive within it (:class:`llmguard.TimeoutExceeded`); for
      a streamed answer it bounds the time to the first chunk unless ``first_chunk`` is given.
    - ``first_chunk``: a stream's first chunk must arrive within it
      (:class:`llmguard.FirstChunkTimeout`). A call is known to stream from ``stream=True`` or
      an async generator function; any other call is treated as plain until its first chunk.
    - ``idle``: at most this long between two chunks (:class:`llmguard.StreamIdleTimeout`).
    - ``total``: the whole attempt, stream included (a plain answer: TimeoutExceeded; a stream:
      :class:`llmguard.StreamTotalTimeout`).

    Time spent queued in an inner RateLimit or ConcurrencyLimit does not count: those limiters
    bound it with their own ``max_wait``. The overall deadline (``Retry(deadline=...)``) bounds
    an attempt until it is sent: one still queued then ends with :class:`llmguard.AdmissionTimeout`
    (it never reached the provider, so CircuitBreaker does not count it and Retry does not retry
    it). Once sent, only these limits apply: a request the provider is already charging for is
    never cancelled because of time spent in a local queue.

    Every error is a ``TimeoutError`` naming its limit; Retry treats it as a TIMEOUT failure
    (only before the first chunk: after it, the error reaches the consumer unchanged). A
    cancellation that comes from the caller stays a ``CancelledError``, and a ``TimeoutError``
    raised by the wrapped client itself passes through unchanged.
    """

    __slots__ = ("seconds", "first_chunk", "idle", "total", "_calls", "_timed_out", "_loop",
                 "_queues")

    def __init__(self, seconds: float | None = None, *, first_chunk: float | None = None,
                 idle: float | None = None, total: float | None = None) -> None:
        if seconds is None and first_chunk is None and idle is None and total is None:
            raise ValueError("Timeout needs a limit: seconds (Timeout(30)), or for streams "
                             "first_chunk, idle and/or total (Timeout(first_chunk=10, idle=30))")
        limits = {name: number(name, value, optional=True, unit=" of seconds")
                  for name, value in (("seconds", seconds), ("first_chunk", first_chunk),
                                      ("idle", idle), ("total", total))}
        self.seconds, self.first_chunk, self.idle, self.total = (
            None if value is None else float(value) for value in limits.values())
        self._calls = self._timed_out = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The running loop's timer queue per limit (attempts of one limit expire in order).
        self._queues: dict[float, TimerQueue] = {}

    def _queue(self, loop: asyncio.AbstractEventLoop, limit: float) -> TimerQueue:
        if loop is not self._loop:  # a new loop (asyncio.run again): its own queues
            self._loop, self._queues = loop, {}
        queue = self._queues.get(limit)
        if queue is None:
            queue = self._queues[limit] = TimerQueue(loop, limit)
        return queue

    def statistics(self) -> TimeoutStats:
        return TimeoutStats(self._calls, self._timed_out)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        self._calls += 1
        loop = call.loop or loop_of(call)
        error: type[TimeoutExceeded] = TimeoutExceeded
        limit, because = self.seconds, "seconds"
        if self.first_chunk is not None and _is_streaming(call):
            error, limit, because = FirstChunkTimeout, self.first_chunk, "first_chunk"
        if self.total is not None and (limit is None or self.total < limit):
            limit, because = self.total, "total"
            if error is FirstChunkTimeout:
                error = StreamTotalTimeout
        current = call.current
        deadline = current.deadline  # (``call.deadline``, without the property)
        if deadline is not None and deadline <= loop.time():
            self._timed_out += 1
            raise AdmissionTimeout(
                f"no time left for attempt {call.attempt} of {call.name or 'the call'}: the "
                "overall deadline (Retry(deadline=...)) has passed; raise it or lower attempts"
            )
        # Until the attempt is sent, only the overall deadline bounds it (waiting for a slot or
        # for quota is bounded by the limiters' own max_wait). Once sent, the provider gets
        # `limit` seconds from that moment even past the deadline: a sent request is paid for,
        # so time it spent queued here must never be what cancels it. (With no limit of its own
        # a sent attempt keeps the deadline, so a hung provider still ends.) The limit is served
        # by one timer per layer and limit (timer.py), not one per attempt.
        task = asyncio.current_task(loop)  # with the loop: no second look-up of it
        assert task is not None
        queue = None
        if limit is not None:  # ``self._queue(loop, limit)``, its common case written out
            queue = self._queues.get(limit) if loop is self._loop else None
            if queue is None:
                queue = self._queue(loop, limit)
        attempt = Timed(task, loop, queue, deadline)
        hooks = current._on_send  # ``add_on_send``: its ``send`` when the attempt is sent
        current._on_send = attempt if hooks is None else with_hook(hooks, attempt)
        try:
            result = await call_next(call)
        except asyncio.CancelledError as exc:
            if not attempt.fired or task.uncancel() > 0:  # the caller's own cancellation (too)
                raise
            self._timed_out += 1
            sent_at = attempt.sent_at
            if sent_at is None:  # local congestion, not a slow provider: breakers must not count it
                raise AdmissionTimeout(
                    f"attempt {call.attempt} of {call.name or 'the call'} was still queued for "
                    "admission (a rate limit or concurrency slot) when the overall deadline "
                    "(Retry(deadline=...)) passed, and never reached the provider; lower the "
                    "load, raise the limits or the deadline"
                ) from None
            if limit is None or loop.time() < sent_at + limit:
                raise TimeoutExceeded(
                    f"attempt {call.attempt} of {call.name or 'the call'} was still running at "
                    "the overall deadline (Retry(deadline=...)); give the Timeout a limit of its "
                    "own or raise the deadline", seconds=None,
                ) from exc
            what = "the first chunk of" if error is FirstChunkTimeout else "attempt"
            raise error(
                f"{what} {call.attempt} of {call.name or 'the call'} took longer than "
                f"{limit:g} s after it was sent ({self._setting(because)}); raise it if the "
                "provider is just slow",
                seconds=limit,
            ) from None
        finally:
            hooks = current._on_send  # ``discard_on_send``
            current._on_send = None if hooks is attempt else without_hook(hooks, attempt)
            attempt.end()
        sent_at = attempt.sent_at
        if isinstance(result, Stream) and (self.idle is not None or self.total is not None):
            self._limit_stream(result, loop.time() if sent_at is None else sent_at)
        return result

    def _setting(self, name: str) -> str:
        return f"Timeout({name}={getattr(self, name):g})"

    def _limit_stream(self, stream: Stream, start: float) -> None:
        def expired(error: type[TimeoutExceeded], name: str, seconds: float):  # noqa: ANN202
            def make() -> BaseException:
                self._timed_out += 1
                return error(f"the stream ran past {self._setting(name)} after "
                             f"{stream.chunks} chunks; raise it if the provider is just slow",
                             seconds=seconds)

            return make

        stream.limit(
            idle=self.idle, deadline=None if self.total is None else start + self.total,
            idle_error=None if self.idle is None else expired(StreamIdleTimeout, "idle", self.idle),
            deadline_error=None if self.total is None else expired(
                StreamTotalTimeout, "total", self.total),
        )

    def __repr__(self) -> str:
        limits = ", ".join(f"{name}={getattr(self, name):g}" for name in self.__slots__[:4]
                           if getattr(self, name) is not None)
        return f"Timeout({limits}, calls={self._calls}, timed_out={self._timed_out})"
