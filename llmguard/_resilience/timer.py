"""Per-attempt timeouts on one timer: the attempts of a Timeout layer in the order they expire.

Every attempt through one Timeout with one limit expires ``limit`` seconds after it was sent,
and attempts are sent in time order, so their expiry times are in the order they were sent: a
FIFO queue holds them, and one loop timer, armed for the head, serves them all (a timer handle
per attempt costs an allocation and a heap push, and its cancellation leaves a dead entry in the
loop's heap). An attempt that ends is marked done and leaves the queue when it reaches the
head; the timer, when it fires, expires what is due and re-arms for the next live attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["Timed", "TimerQueue"]

#: The loop runs a timer up to its clock's resolution early (asyncio's ``_clock_resolution``):
#: what is due within it is due now.
_RESOLUTION = time.get_clock_info("monotonic").resolution


class Timed:
    """One attempt's timing: sent when the innermost handler calls :meth:`send` (an
    ``on_send`` hook of the attempt), expired (its task cancelled, ``fired`` set) when its limit
    or the overall deadline passes first."""

    __slots__ = ("task", "loop", "queue", "sent_at", "expires", "fired", "done", "handle")

    def __init__(self, task: asyncio.Task[object], loop: asyncio.AbstractEventLoop,
                 queue: TimerQueue | None, deadline: float | None) -> None:
        self.task, self.loop, self.queue = task, loop, queue
        self.sent_at: float | None = None
        self.expires = 0.0
        self.fired = self.done = False
        #: The overall deadline's own timer until the attempt is sent (rare: Retry(deadline=)).
        self.handle = None if deadline is None else loop.call_at(deadline, self.expire)

    def send(self) -> None:
        """The attempt reaches the provider now: its limit starts."""
        if self.sent_at is None and not self.fired:  # armed once per attempt
            self.sent_at = self.loop.time()
            if self.queue is not None:
                if self.handle is not None:
                    self.handle.cancel()
                    self.handle = None
                self.expires = self.sent_at + self.queue.limit
                self.queue.add(self)

    #: The attempt's ``on_send`` hook is the object itself (a bound method would be one more
    #: object per call held while the call waits for admission).
    __call__ = send

    def expire(self) -> None:
        self.fired = True
        self.task.cancel()

    def end(self) -> None:
        """The attempt is over (result, error or cancellation): nothing fires for it now."""
        self.done = True
        if self.handle is not None:
            self.handle.cancel()
        if self.queue is not None:
            # Drop ended attempts from the queue's head (the timer stays armed: re-arming per
            # call would cost what one timer per attempt does; if it fires early it re-arms)
            attempts = self.queue.attempts
            while attempts and attempts[0].done:
                attempts.popleft()


class TimerQueue:
    """Sent attempts of one (loop, limit), oldest first, and the one timer serving them."""

    __slots__ = ("loop", "limit", "attempts", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.loop, self.limit = loop, limit
        self.attempts: deque[Timed] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, attempt: Timed) -> None:
        self.attempts.append(attempt)
        if self._timer is None:
            self._timer = self.loop.call_at(attempt.expires, self._fire)

    def _fire(self) -> None:
        self._timer = None
        attempts = self.attempts
        now = self.loop.time() + _RESOLUTION
        while attempts:
            head = attempts[0]
            if not head.done:
                if head.expires > now:
                    self._timer = self.loop.call_at(head.expires, self._fire)
                    return
                head.done = True
                head.expire()
            attempts.popleft()

    def __len__(self) -> int:
        return len(self.attempts)
