"""``--timeout`` at a server that queues: an attempt's time counted from when the server could
start serving it, not from its send.

LiteLLM's proxy takes requests from its queue one event-loop turn at a time (40-60 ms each on a
loaded machine): of 1,024 sent at once, the last wait 40-60 s before it even looks at them.
Timed from the send, ``--timeout 60`` expired for 150-300 of them, all still in the proxy's
queue; the proxy counts and answers those anyway (a client closing its connection does not
take a request out of its queue), and the retries were counted a second time (``bench_cli.py
--litellm``). A read timeout would not tell them apart: the proxy writes nothing of an answer
before it has all of it.

What tells a queued attempt from a lost one is the server answering the ones sent before it:
while it does, the queue ahead of it moves. So an attempt fails when ``timeout`` s have passed
since its send *and* since the last answer to one of ours sent before it to the same upstream.
Only answers count (a body or an HTTP error: the server did something); our own timeouts do
not, or a server that answers nothing would expire a burst one ``timeout`` after another. A
hung server still fails every attempt ``timeout`` s after its send; a request lost inside a
busy one fails ``timeout`` s after the last one before it was answered. The check runs only
when an attempt's time is up (no timer moved on every answer).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Ahead"]


class Ahead:
    """One upstream's attempts of ours in their send order (``seq``), and when recent ones
    were answered: ``(loop time, seq)``, oldest first."""

    __slots__ = ("sent", "answers", "timeout")

    def __init__(self, timeout: float) -> None:
        self.sent = 0
        self.timeout = timeout
        self.answers: deque[tuple[float, int]] = deque()

    def send(self) -> int:
        """The next attempt's place in the send order."""
        self.sent += 1
        return self.sent

    def answered(self, seq: int, now: float) -> None:
        """The attempt ``seq`` was answered at ``now``. Answers no check can read any more are
        dropped: a check due at ``t`` (not before now) reads only those after ``t - timeout``."""
        answers = self.answers
        answers.append((now, seq))
        horizon = now - self.timeout
        while answers and answers[0][0] < horizon:
            answers.popleft()

    def due(self, seq: int, since: float) -> float:
        """When the attempt ``seq``, its time counted from ``since``, is up: ``timeout`` after
        the last answer since then to one sent before it (else after ``since``)."""
        for at, other in reversed(self.answers):  # newest first: the first before it is last
            if at <= since:
                break
            if other < seq:
                return at + self.timeout
        return since + self.timeout

    def bound(self, limit: asyncio.Timeout, seq: int, sent: float) -> list[Any]:
        """Arm ``limit`` (a ``asyncio.timeout(None)``) for the attempt ``seq`` sent at ``sent``:
        a handle (in a list, replaced as the check re-arms) that the caller cancels at the end."""
        loop = asyncio.get_running_loop()
        box: list[Any] = []

        def check(since: float) -> None:
            now = loop.time()
            due = self.due(seq, since)
            if due <= now:
                limit.reschedule(now)  # expires at once: the attempt's own TimeoutError
            else:
                box[0] = loop.call_at(due, check, due - self.timeout)

        box.append(loop.call_at(sent + self.timeout, check, sent))
        return box
