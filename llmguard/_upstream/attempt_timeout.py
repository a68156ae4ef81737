"""An application's per-attempt ``timeout`` at an upstream that queues (``llmguard run
--timeout``, a gateway model's ``timeout``, a deployment's): an attempt's time counted from
when the server could start serving it, not from its send.

LiteLLM's proxy takes requests from its queue one event-loop turn at a time (40-60 ms each on a
loaded machine): of 1,024 sent at once, the last wait 40-60 s before it even looks at them.
Timed from the send, ``--timeout 60`` expired for 150-300 of them, all still in the proxy's
queue; the proxy counts and answers those anyway (a client closing its connection does not
take a request out of its queue), and the retries were counted a second time (``bench_cli.py
--litellm``); a gateway model's ``timeout`` and a deployment's (a Timeout layer and the
Router's ``Deployment(timeout=)``, timed from the send too) did the same to its ``retries``.
A read timeout would not tell them apart: the proxy writes nothing of an answer before it has
all of it.

What tells a queued attempt from a lost one is the server answering the ones sent before it:
while it does, the queue ahead of it moves. So an attempt fails when ``timeout`` s have passed
since its send *and* since the last answer to one of ours sent before it to the same upstream.
Only answers count (a body or an HTTP error: the server did something); our own timeouts do
not, or a server that answers nothing would expire a burst one ``timeout`` after another. A
hung server still fails every attempt ``timeout`` s after its send; a request lost inside a
busy one fails ``timeout`` s after the last one before it was answered. The check runs only
when an attempt's time is up (no timer moved on every answer), on one timer per upstream.

Both applications (``llmguard run``, on Ray too, and ``llmguard serve``, its jobs too) bound
an attempt with :meth:`Ahead.within` in their innermost handler, one :class:`Ahead` per
upstream (:class:`Aheads`), instead of a Timeout layer or ``Deployment(timeout=)``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any

from .errors import ProviderTimeout

__all__ = ["Ahead", "Aheads"]

#: The loop runs a timer up to its clock's resolution early (as in ``_resilience.timer``):
#: what is due within it is due now.
_RESOLUTION = time.get_clock_info("monotonic").resolution


class _Attempt:
    """One attempt of ours at the upstream: its place in the send order, when it was sent, its
    task (cancelled when its time is up: ``fired``), ``done`` once it ended."""

    __slots__ = ("seq", "sent", "task", "done", "fired")

    def __init__(self, seq: int, sent: float, task: asyncio.Task[Any]) -> None:
        self.seq, self.sent, self.task = seq, sent, task
        self.done = self.fired = False


class Ahead:
    """One upstream's attempts of ours in their send order (``seq``), and when recent ones
    were answered: ``(loop time, seq)``, oldest first.

    One loop timer serves every attempt (as the Timeout layer's :mod:`..._resilience.timer`:
    a timer per attempt costs a heap push, and its cancellation a dead entry): the attempts
    fall due in their send order (one sent later is never due sooner: every answer that
    delays the earlier one delays it too), so the timer only looks at the oldest pending."""

    __slots__ = ("sent", "answers", "timeout", "setting", "_pending", "_timer", "_loop")

    def __init__(self, timeout: float, setting: str = "timeout") -> None:
        self.sent = 0
        self.timeout = timeout
        #: The option that set ``timeout``, as a timeout's message names it.
        self.setting = setting
        self.answers: deque[tuple[float, int]] = deque()
        #: Attempts not yet ended or expired, in send order (ended ones leave at the head).
        self._pending: deque[_Attempt] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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

    def _fire(self) -> None:
        """Expire the oldest pending attempts that are due; re-arm for the first that is not."""
        self._timer = None
        loop, pending = self._loop, self._pending
        assert loop is not None
        now = loop.time() + _RESOLUTION
        while pending:
            head = pending[0]
            if not head.done:
                due = self.due(head.seq, head.sent)
                if due > now:
                    self._timer = loop.call_at(due, self._fire)
                    return
                head.done = head.fired = True
                head.task.cancel()
            pending.popleft()

    async def within(self, send: Awaitable[Any], model: Any) -> Any:
        """``send`` (an attempt at this upstream, sent now) awaited within its time, else
        :class:`~.errors.ProviderTimeout` (a TimeoutError from inside ``send`` passes through:
        an inner library's own). An HTTP error is an answer too: the server got to it."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (asyncio.run again): its own timer
            self._loop, self._pending, self._timer = loop, deque(), None
        task = asyncio.current_task(loop)
        assert task is not None
        self.sent += 1
        attempt = _Attempt(self.sent, loop.time(), task)
        pending = self._pending
        pending.append(attempt)
        if self._timer is None:
            self._timer = loop.call_at(attempt.sent + self.timeout, self._fire)
        try:
            answer = await send
        except asyncio.CancelledError:
            if attempt.fired and task.uncancel() == 0:  # ours, not the caller's (too)
                raise ProviderTimeout(f"{model} did not answer within {self.setting} "
                                      f"{self.timeout:g} s (nor any sent before it)") from None
            raise
        except Exception as exc:
            if isinstance(getattr(exc, "status_code", None), int):
                self.answered(attempt.seq, loop.time())
            raise
        finally:
            attempt.done = True
            while pending and pending[0].done:
                pending.popleft()
        self.answered(attempt.seq, loop.time())
        return answer


class Aheads:
    """One :class:`Ahead` per upstream (by identity: one replaced at run time starts afresh),
    bounding attempts by the application's ``timeout`` (the option ``setting``; None: none)
    or, where shorter, the ``timeout`` of the deployment the upstream serves (``deployments``,
    each a ``DeploymentConfig``: the Router's, which leaves them to the terminal: see
    :func:`~llmguard._upstream.deployments.router_of`)."""

    __slots__ = ("timeout", "setting", "_own", "_by")

    def __init__(self, timeout: float | None, setting: str = "timeout",
                 deployments: Iterable[Any] = ()) -> None:
        self.timeout, self.setting = timeout, setting
        self._own = {d.name: d.timeout for d in deployments if d.timeout is not None}
        self._by: dict[int, tuple[Any, Ahead | None]] = {}

    def __call__(self, upstream: Any, deployment: str | None = None) -> Ahead | None:
        """The :class:`Ahead` of ``upstream`` (of the deployment named ``deployment``, if
        any), or None when no timeout bounds its attempts."""
        known = self._by.get(id(upstream))
        if known is None or known[0] is not upstream:
            limit, setting = self.timeout, self.setting
            own = self._own.get(deployment) if deployment is not None else None
            if own is not None and (limit is None or own < limit):
                limit, setting = own, f"deployment {deployment}'s timeout"
            known = self._by[id(upstream)] = (
                upstream, None if limit is None else Ahead(limit, setting))
        return known[1]
