"""``Call``: the per-call context that flows through every layer (the layer seams, which
take a ``Call``, are in ``layer.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from . import events
from .attempt import Attempt, Hooks
from .events import CallRecord, Event, EventKind
from .public import public


@public
class Call:
    """Per-call context that flows through every layer.

    Layers never rebuild it: they read what they need and write what they learn to
    :attr:`record`, the typed account of the call. Every attribute has a default so a layer can
    read any of them without ``getattr`` guards. Each field has one owner that writes and
    restores it (README, "Who owns what in a call"): the wrapped function's identity is fixed;
    the facts of one attempt (number, deadline, tokens, sent, response headers, hooks) live in
    :attr:`current`, an :class:`~llmguard._core.attempt.Attempt` made by the layer that starts
    the attempt (Retry, Fallback), which puts the previous one back when done.
    """

    __slots__ = ("fn", "args", "kwargs", "name", "priority", "partition", "current", "loop",
                 "started", "_record")

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        loop: Any = None,
        started: float | None = None,
    ) -> None:
        #: The guarded function, fixed when the pipeline wrapped it: what Cache keys on and what
        #: metrics name. Only a Fallback (for an alternate client, below it) swaps it for its
        #: inner call, and restores it; tracing hooks the terminal handler instead.
        self.fn = fn
        #: Positional arguments of the call (``self`` included for methods).
        self.args = args
        #: Keyword arguments of the call; a layer that overrides arguments for its inner calls
        #: (Fallback) replaces this dict and puts the caller's back.
        self.kwargs: dict[str, Any] = {} if kwargs is None else kwargs
        #: The pipeline's name (metric attribute, error messages).
        self.name = name
        #: Admission priority: higher is served first. None means the default class (0).
        self.priority: int | None = None
        #: Fairness partition (tenant, API key) chosen by a layer's ``key`` callable.
        self.partition: Hashable | None = None
        #: The attempt in progress (the first one until Retry or Fallback starts another).
        self.current = Attempt()
        #: The event loop the call runs on, looked up once per call (``guarded`` passes it;
        #: else the first layer that needs it, through :func:`loop_of`): every layer needs it
        #: for its clock, and ``asyncio.get_running_loop()`` costs a quarter of a microsecond,
        #: ten times per call in the README's stack.
        self.loop = loop
        #: The loop time the guarded function read as the call started (it asked a Cache below
        #: counting layers for an answer at once, timed for them), or None: the first Metrics
        #: takes it as its start instead of reading the clock again (and clears it, so a layer
        #: or attempt after an await reads its own).
        self.started = started
        self._record: CallRecord | None = None  # see the record property

    # The current attempt's facts, read (and written, by their owners) through the call.

    @property
    def attempt(self) -> int:
        """1 for the first attempt; Retry counts them."""
        return self.current.number

    @property
    def deadline(self) -> float | None:
        """Absolute loop time (``loop.time()``) after which no new attempt should start."""
        return self.current.deadline

    @property
    def tokens(self) -> int | None:
        """Token estimate reserved by a rate limiter for this attempt, if any."""
        return self.current.tokens

    @tokens.setter
    def tokens(self, value: int | None) -> None:
        self.current.tokens = value

    @property
    def sent(self) -> bool:
        """True once this attempt reached the provider (the innermost handler called it)."""
        return self.current.sent

    @property
    def response_headers(self) -> Mapping[str, str] | None:
        """The provider's HTTP response headers of this attempt (success or error), when the
        terminal or an integration saw them: header observers (RateLimit) learn from them."""
        return self.current.response_headers

    @response_headers.setter
    def response_headers(self, value: Mapping[str, str] | None) -> None:
        self.current.response_headers = value

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
        if this returns (it may raise: an outer rate limit found no room and gave up). A
        limiter that makes a call wait tells it first (:meth:`queueing`)."""
        pending = self.after_wait(seconds, by)
        if pending is not None:
            await pending

    def after_wait(self, seconds: float, by: str) -> Awaitable[None] | None:
        """:meth:`waited` without its coroutine: records the wait and runs the ``on_wait``
        hooks, returning what is left to await (None: nothing, the common case: an outer
        RateLimit moved its reservation at once). ConcurrencyLimit calls it for every call
        that waited for a permit (most of them under ``gather``)."""
        record = self._record or self.record  # (made already, the common case: no frame)
        record.wait += seconds
        record.delayed_by = by
        current = self.current
        parent = current.parent
        if parent is None or (parent.parent is None and parent._on_wait is None):
            # the common cases (as ``Attempt.reached_provider``): the hooks of the current
            # attempt alone, without the lineage's list (an outer RateLimit's one hook)
            hooks = current._on_wait
            if hooks is None:
                return None
            if type(hooks) is not Hooks:
                return hooks()  # (a hook done at once returns None)
        return current.admitted_after_wait()

    def queueing(self, waits: bool = True) -> bool:
        """An inner limiter makes the call wait from now (its slow path, before it awaits), or
        (``waits=False``) let it go after no time at all: the ``on_wait`` hooks with a
        ``queued`` method are told. An outer rate limit's reservation is then not at the
        provider yet, and its readings of the server's headers must not count it there
        (:mod:`llmguard._admission.ratelimit.queued`). True when, let go, the call must be
        counted again all the same (its reservation gave way meanwhile): await :meth:`waited`."""
        current = self.current
        parent = current.parent
        if parent is None or (parent.parent is None and parent._on_wait is None):
            # the common cases (as ``after_wait``): the current attempt's one hook alone, with
            # no lineage list (every call queued below an outer RateLimit under ``gather``)
            hooks = current._on_wait
            if hooks is None:
                return False
            if type(hooks) is not Hooks:
                queued = getattr(hooks, "queued", None)
                return queued is not None and bool(queued(waits))
        again = False
        for attempt in current._lineage():
            if attempt._on_wait is not None:
                for hook in attempt.wait_hooks():
                    queued = getattr(hook, "queued", None)
                    if queued is not None and queued(waits):
                        again = True
        return again

    def mark_sent(self) -> None:
        """The attempt reaches the provider now. The innermost handler calls it; so does a
        layer that stands in for the provider (a test double such as ``testing.Faults``)."""
        record = self._record or self.record  # (as in after_wait: every call runs this)
        record.sent += 1
        model = self.kwargs.get("model")
        if isinstance(model, str) and (not record.models or record.models[-1] != model):
            record.models = (*record.models, model)
        self.current.reached_provider()

    def mark_unsent(self) -> None:
        """The attempt marked sent never reached the provider after all: the transport could
        not deliver it (the connection failed before the request was written, or the server
        had closed it). Limiters then give back what they counted for it, as for any attempt
        never sent. Attempts it runs inside stay sent (an earlier one of theirs may have been)."""
        if self.current.sent:
            self.record.sent -= 1
            self.current.sent = False

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

    def __repr__(self) -> str:
        return (
            f"<Call {self.name or getattr(self.fn, '__qualname__', self.fn)!s} "
            f"attempt={self.attempt} priority={self.priority} partition={self.partition!r} "
            f"tokens={self.tokens} {self.record!r}>"
        )


def loop_of(call: Call) -> Any:
    """The running event loop of ``call`` (looked up and kept on the call the first time)."""
    loop = call.loop
    if loop is None:
        import asyncio  # here: `import llmguard` does not load asyncio

        loop = call.loop = asyncio.get_running_loop()
    return loop


def record_of(call: Call) -> CallRecord:
    """``call.record``, without the property's frame once the record is made (as it is by the
    time an answered call reaches Metrics)."""
    return call._record or call.record
