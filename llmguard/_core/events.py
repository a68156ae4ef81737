"""What happened to a call: one typed record per call, and events published as they happen.

Every :class:`~llmguard.Call` carries a :class:`CallRecord` (``call.record``) that the layers
write as they act (Retry its retries and delays, Fallback the alternate that answered, Cache its
outcome, the limiters their waits, the provider integration usage and cost). Metrics, the batch
runner, ``llmguard run`` and users all read that one record: :func:`recording` hands back the
records of the calls made inside a block.

Layers also publish :class:`Event`\\ s (retry scheduled, fallback taken, circuit opened, ...)
to whoever :func:`subscribe`\\ d: the seed documents' event bus, done once. With no subscriber
a layer pays one truthiness test of :data:`subscribers`; nothing is built.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .public import public

if TYPE_CHECKING:
    import asyncio

__all__ = ["CallRecord", "Event", "EventKind", "Subscription", "emit", "recording", "subscribe",
           "subscribers"]

@public
class CallRecord:
    """What happened to one call besides its result. Each field has one writer (in brackets)."""

    __slots__ = ("sent", "models", "latency", "retries", "delays", "fallback", "cache",
                 "rejected_by", "delayed_by", "wait", "usage", "cost", "provider", "operation",
                 "server", "error", "deployment", "inherited")

    def __init__(self) -> None:
        #: Attempts that reached the provider, across retries and alternates; 0 for a cache hit
        #: or a call refused before it was sent [the innermost handler, ``Call.mark_sent``].
        self.sent = 0
        #: Models the attempts were sent with, in order, consecutive repeats collapsed (a retry
        #: is not a new model; a Fallback alternate may be) [``Call.mark_sent``].
        self.models: tuple[str, ...] = ()
        #: Seconds the last attempt took at the provider, when the terminal handler measures it
        #: (``llmguard run``, Ray), else None [the terminal handler].
        self.latency: float | None = None
        #: Retries scheduled [Retry].
        self.retries = 0
        #: Seconds waited before each retry, in order [Retry].
        self.delays: tuple[float, ...] = ()
        #: Label of the alternate that answered (``"default"`` for a default value), or None
        #: when the primary did [Fallback].
        self.fallback: str | None = None
        #: ``"hit"``, ``"miss"``, ``"coalesced"`` (answered by an identical call in flight),
        #: ``"bypass"``, or None without a cache [Cache].
        self.cache: str | None = None
        #: The layer that refused the call (``"concurrency_limit"``, ``"rate_limit"``,
        #: ``"circuit_breaker"``), or None [that layer].
        self.rejected_by: str | None = None
        #: The limiter that last delayed the call, or None [ConcurrencyLimit, RateLimit].
        self.delayed_by: str | None = None
        #: Seconds spent waiting for admission, summed over limiters and attempts [the same].
        self.wait = 0.0
        #: Token usage learned from the answer (``llmguard.Usage``), or None [RateLimit,
        #: Metrics, the litellm integration: whichever reads the answer first].
        self.usage: Any = None
        #: Spend in USD summed over attempts, when something prices them [the litellm
        #: integration; else a Budget, from the usage at its prices].
        self.cost: float | None = None
        #: ``gen_ai.provider.name`` as the integration knows it, or None [integrations].
        self.provider: str | None = None
        #: ``gen_ai.operation.name`` (``"chat"``, ``"embeddings"``), or None [integrations].
        self.operation: str | None = None
        #: ``(server.address, server.port)`` the provider was reached at, or None [integrations].
        self.server: tuple[str, int | None] | None = None
        #: Kind of the error the call ended with (``"rate_limited"``, ...), None on success
        #: [the guarded function].
        self.error: str | None = None
        #: Name of the deployment the last attempt went to (the one that answered, when the
        #: call succeeded), or None without a Router [Router].
        self.deployment: str | None = None
        #: True when this call waited on an identical call in flight (``cache="coalesced"``)
        #: whose first caller was cancelled before the answer came: the provider call is then
        #: this one's to account for (usage, cost, duration), so paid tokens are never lost
        #: [Cache].
        self.inherited = False

    @property
    def billable(self) -> bool:
        """False when the cache answered (a hit, or a waiter on an identical call in flight):
        no provider call, so no tokens, cost or operation duration of its own; True for a
        waiter that :attr:`inherited` the call its cancelled first caller started."""
        return self.cache not in ("hit", "coalesced") or self.inherited

    def __repr__(self) -> str:
        shown = (f"{name}={getattr(self, name)!r}" for name in self.__slots__
                 if getattr(self, name) not in (None, 0, 0.0, ()))
        return f"CallRecord({', '.join(shown)})"


@public
class EventKind(str, enum.Enum):
    """What an :class:`Event` reports."""

    #: Retry will send the call again after ``event.delay`` seconds (``event.error`` is why;
    #: None when the result was rejected).
    RETRY_SCHEDULED = "retry_scheduled"
    #: Fallback answered with an alternate (``event.detail`` is its label) after ``event.error``.
    FALLBACK_TAKEN = "fallback_taken"
    #: The circuit opened (``event.detail`` is the circuit's key).
    CIRCUIT_OPENED = "circuit_opened"
    #: The circuit lets probes through.
    CIRCUIT_HALF_OPEN = "circuit_half_open"
    #: The circuit closed again.
    CIRCUIT_CLOSED = "circuit_closed"
    #: A 429 paused the rate limit's admissions for ``event.delay`` seconds.
    RATE_LIMIT_PAUSED = "rate_limit_paused"
    #: The cache answered (``event.detail``: ``"hit"`` or ``"coalesced"``).
    CACHE_HIT = "cache_hit"
    #: A layer refused the call before it was sent (``event.error`` is the AdmissionError).
    ADMISSION_REJECTED = "admission_rejected"
    #: A Router's deployment (``event.detail``, its name) is out for ``event.delay`` seconds: it
    #: answered 429 (cooling down per its Retry-After) or its circuit opened.
    DEPLOYMENT_COOLDOWN = "deployment_cooldown"
    #: A Router's deployment (``event.detail``) takes calls again.
    DEPLOYMENT_RECOVERED = "deployment_recovered"
    #: A Budget's spend passed its ``soft`` fraction of the cap, once per window
    #: (``event.detail``: the budget's statistics for that key and window).
    BUDGET_SOFT_LIMIT = "budget_soft_limit"


@public
@dataclass(frozen=True, slots=True)
class Event:
    """One thing a layer did, as published to :func:`subscribe`\\ rs."""

    kind: EventKind
    #: The layer's kind in snake case (``"retry"``, ``"rate_limit"``).
    layer: str
    #: The pipeline's name (``Pipeline(name=...)``), or None.
    pipeline: str | None = None
    #: The record of the call it happened to (None for a circuit's own transitions).
    record: CallRecord | None = None
    #: The attempt number at the time (1 for the first).
    attempt: int = 1
    #: Seconds: the retry delay, or the pause.
    delay: float | None = None
    #: The error that led to it, if any.
    error: BaseException | None = None
    #: Kind-specific detail (see :class:`EventKind`).
    detail: Any = None


#: The callbacks subscribed now: subscription -> ``(callback, kinds or None)``, in the order
#: they subscribed. Layers test it before building an event: an empty dict is the whole cost
#: of an unobserved event. Keyed by the :class:`Subscription`, so closing one removes exactly
#: that one, in O(1), however many there are and however often it is closed.
subscribers: dict[Subscription, tuple[Callable[[Event], Any], frozenset[EventKind] | None]] = {}
_tasks: set[asyncio.Task[Any]] = set()  # async callbacks in progress (held so they finish)


@public
class Subscription:
    """What :func:`subscribe` returns: ``close()`` it (or leave its ``with`` block) to stop."""

    __slots__ = ("__weakref__",)

    def close(self) -> None:
        """Stop delivering events to this callback (idempotent: a second close does nothing,
        and never touches another subscription of the same callback)."""
        subscribers.pop(self, None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@public
def subscribe(callback: Callable[[Event], Any], *kinds: EventKind | str) -> Subscription:
    """Call ``callback(event)`` for every event of ``kinds`` (all kinds when none are given).

    A plain callback runs inline, as the layer acts: keep it quick (count, log, put on a queue).
    An ``async def`` callback is run as a task of its own, so a slow one never delays a call.
    A callback that raises is logged (``llmguard.events``) and never breaks the call.
    """
    if not callable(callback):
        raise TypeError(f"subscribe(callback=...) takes a callable, got {callback!r}")
    try:
        wanted = frozenset(EventKind(kind) for kind in kinds) or None
    except ValueError:
        raise ValueError(f"subscribe(*kinds): unknown event kind in {kinds!r}; use one of "
                         f"{[kind.value for kind in EventKind]}") from None
    subscription = Subscription()
    subscribers[subscription] = (callback, wanted)
    return subscription


def emit(event: Event) -> None:
    """Deliver ``event`` to the subscribers of its kind. Layers call it only when
    :data:`subscribers` is non-empty."""
    for callback, wanted in tuple(subscribers.values()):
        if wanted is not None and event.kind not in wanted:
            continue
        try:
            result = callback(event)
            if inspect.isawaitable(result):
                import asyncio  # only once someone subscribed an async callback

                task = asyncio.ensure_future(result)
                _tasks.add(task)
                task.add_done_callback(_finished)
        except Exception:
            _log().exception("llmguard event subscriber %r failed on %s", callback,
                             event.kind.value)


def _finished(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        _log().error("llmguard event subscriber failed", exc_info=task.exception())


def _log() -> Any:
    import logging  # not at import time: `import llmguard` stays light

    return logging.getLogger("llmguard.events")


#: The list the records of guarded calls made in this context go to, or None (:func:`recording`).
records: ContextVar[list[CallRecord] | None] = ContextVar("llmguard_records", default=None)


@public
@contextmanager
def recording() -> Iterator[list[CallRecord]]:
    """Collect the :class:`CallRecord` of every guarded call made inside the block (in this
    task and the tasks it starts), in the order the calls started::

        with llmguard.recording() as calls:
            await summarise(doc)
        print(calls[0].retries, calls[0].cache)
    """
    collected: list[CallRecord] = []
    token = records.set(collected)
    try:
        yield collected
    finally:
        records.reset(token)
