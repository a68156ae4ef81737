"""``Call``: the per-call context that flows through every layer (the layer seams are in
``layer.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from . import events
from .events import CallRecord, Event, EventKind
from .layer import (
    BuildHook,
    Handler,
    HeaderObserver,
    Layer,
    compose,
    invoke,
    invoke_timed,
    is_async_callable,
    label,
)
from .public import public

# The layer seams live in ``layer.py``; re-exported here, where layers have always imported them.
__all__ = ["BuildHook", "Call", "Handler", "HeaderObserver", "Layer", "compose", "invoke",
           "invoke_timed", "is_async_callable", "label"]

@public
class Call:
    """Per-call context that flows through every layer.

    Layers never rebuild it: they read what they need and write what they learn to
    :attr:`record`, the typed account of the call. Every attribute has a default so a layer can
    read any of them without ``getattr`` guards. Each field has one owner that writes and
    restores it (README, "Who owns what in a call"): the wrapped function's identity is fixed,
    per-attempt facts belong to the layer that starts the attempt (:meth:`save`/
    :meth:`restore`), ``on_send`` to Timeout, ``on_wait`` to RateLimit.
    """

    __slots__ = (
        "fn",
        "args",
        "kwargs",
        "name",
        "attempt",
        "deadline",
        "priority",
        "partition",
        "tokens",
        "_record",
        "on_wait",
        "on_send",
        "sent",
        "response_headers",
    )

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        #: The guarded function, fixed when the pipeline wrapped it: what Cache keys on and what
        #: metrics name. Only a Fallback (for an alternate client, below it) swaps it for its
        #: inner call, and restores it; tracing hooks the terminal handler instead.
        self.fn = fn
        #: Positional arguments of the call (``self`` included for methods).
        self.args = args
        #: Keyword arguments of the call; layers that override arguments replace this dict.
        self.kwargs: dict[str, Any] = {} if kwargs is None else kwargs
        #: The pipeline's name (metric attribute, error messages).
        self.name = name
        #: 1 for the first attempt; Retry increments it.
        self.attempt = 1
        #: Absolute loop time (``loop.time()``) after which no new attempt should start, or None.
        self.deadline: float | None = None
        #: Admission priority: higher is served first. None means the default class (0).
        self.priority: int | None = None
        #: Fairness partition (tenant, API key) chosen by a layer's ``key`` callable.
        self.partition: Hashable | None = None
        #: Token estimate reserved by a rate limiter for this attempt, if any.
        self.tokens: int | None = None
        self._record: CallRecord | None = None  # see the record property
        #: Awaited by :meth:`waited` when an inner limiter let the call go after a wait: an outer
        #: rate limit then counts the request again from now, when the provider will see it
        #: (waiting for room again if the window has none). Owner: RateLimit, restored on exit.
        self.on_wait: Callable[[], Awaitable[None]] | None = None
        #: Called by the innermost handler just before it calls the provider: Timeout starts
        #: its clock there. Owner: Timeout, restored on exit.
        self.on_send: Callable[[], None] | None = None
        #: True once this attempt reached the provider (the innermost handler called it).
        #: Reset by the layer that starts an attempt (Retry, Fallback, Timeout).
        self.sent = False
        #: The provider's HTTP response headers of the latest attempt (success or error), when
        #: the terminal or an integration saw them: header observers (RateLimit) learn quotas
        #: from them. None until then.
        self.response_headers: Mapping[str, str] | None = None

    @property
    def record(self) -> CallRecord:
        """What happened to the call (retries, waits, cache outcome, usage, cost, ...): each
        field written by its one owner, read by metrics, runners and ``llmguard.recording``.
        Made on first use, so a call still queued for admission holds none."""
        record = self._record
        if record is None:
            record = self._record = CallRecord()
        return record

    @property
    def model(self) -> str | None:
        """The ``model`` keyword argument, when the call has one."""
        model = self.kwargs.get("model")
        return model if isinstance(model, str) else None

    async def waited(self, seconds: float, by: str) -> None:
        """Record time spent waiting for admission (metrics' admission-wait histogram); a
        limiter awaits it as it lets the call go after waiting, then holds what it granted only
        if this returns (it may raise: an outer rate limit found no room and gave up)."""
        record = self.record
        record.wait += seconds
        record.delayed_by = by
        if self.on_wait is not None:
            await self.on_wait()

    def mark_sent(self) -> None:
        """The attempt reaches the provider now. The innermost handler calls it; so does a
        layer that stands in for the provider (a test double such as ``testing.Faults``)."""
        self.sent = True
        record = self.record
        record.sent += 1
        model = self.kwargs.get("model")
        if isinstance(model, str) and (not record.models or record.models[-1] != model):
            record.models = (*record.models, model)
        if self.on_send is not None:
            self.on_send()

    def emit(self, kind: EventKind, layer: str, *, delay: float | None = None,
             error: BaseException | None = None, detail: Any = None) -> None:
        """Publish an :class:`~llmguard.Event` about this call to the subscribers, if any."""
        if events.subscribers:
            events.emit(Event(kind, layer, self.name, self.record, self.attempt, delay, error,
                              detail))

    def rejected(self, layer: str, error: BaseException) -> BaseException:
        """Note that ``layer`` refused this call before sending it; returns ``error`` to raise."""
        self.record.rejected_by = layer
        self.emit(EventKind.ADMISSION_REJECTED, layer, error=error)
        return error

    def save(self) -> tuple[Any, ...]:
        """The per-attempt facts, for the layer that starts attempts (Retry, Fallback) to give
        each attempt the same start and to leave nothing of them behind (:meth:`restore`)."""
        return (self.fn, self.kwargs, self.deadline, self.tokens, self.partition, self.sent)

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Put back what :meth:`save` returned."""
        self.fn, self.kwargs, self.deadline, self.tokens, self.partition, self.sent = saved

    def __repr__(self) -> str:
        return (
            f"<Call {self.name or getattr(self.fn, '__qualname__', self.fn)!s} "
            f"attempt={self.attempt} priority={self.priority} partition={self.partition!r} "
            f"tokens={self.tokens} {self.record!r}>"
        )
