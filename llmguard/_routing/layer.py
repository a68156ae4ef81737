"""The Router layer: one model served by several deployments, each attempt sent to one with room
now, never any deployment over its quota.

Why not fail over after a 429 (what most gateways do): the 429 has already cost a round trip
and, at OpenAI, counts against the quota. Here the choice of deployment IS a reservation on its
quotas (``Deployment.reserve``), so a call goes only where there is room and concurrent callers
never take the same last unit; with no room anywhere it waits in one line for the earliest
room across all of them (``line``). A 429, 5xx, timeout or open circuit at one deployment moves
the attempt to another, so a Retry above sees one logical call.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from .._admission.ratelimit.backend import MemoryBackend, RateLimitBackend, TakesNow
from .._admission.ratelimit.quotas import check_backend, used_tokens
from .._admission.ratelimit.split import split_estimate, split_used
from .._core import events
from .._core.attempt import Attempt
from .._core.call import Call
from .._core.check import callable_or_none, number, seed as check_seed
from .._core.classify import error_headers
from .._core.events import EventKind
from .._core.layer import Handler
from .._core.public import public
from .._core.stream import Stream
from .._core.tokens import estimate_tokens
from .admission import Admission
from .attempt import default_circuit, moves, publish_circuit, send
from .deployment import Deployment
from .learn import observe, refused
from .stats import RouterStats, deployment_stats, loop_time
from .strategies import check_strategy

__all__ = ["Router"]

#: The deployment of the attempt in progress in this task (provider headers go to it) and the
#: loop time it was admitted there (its headers time the way there: the margin).
_current: ContextVar[tuple[Deployment, float] | None] = ContextVar("llmguard_deployment")

@public
class Router:
    """Layer: one model over several :class:`llmguard.Deployment` s, each attempt sent to a
    deployment with room now, none ever sent more than its quota.

    * ``strategy`` orders the deployments that have room: ``"headroom"`` (default: the most
      free quota), ``"weighted"`` (random by ``weight``), ``"least_latency"``, ``"ordered"``
      (the first is the primary, the rest take its overflow).
    * With no room anywhere the call waits in one line across all deployments (by
      ``call.priority``, then round-robin across ``call.partition`` (the tenant), then first
      come), for the earliest room any of them has; ``max_wait``
      seconds of that raises :class:`llmguard.AdmissionTimeout`.
    * A 429, 5xx, timeout (``Deployment(timeout=)``, timed from the send: never time queued
      below the Router) or open circuit moves the attempt to another deployment it has not
      tried; a 429 cools its deployment down per Retry-After.
    * ``priority(*args, **kwargs) -> int`` ranks waiting calls (higher first; default
      ``call.priority`` as an outer layer set it); ``tokens`` / ``usage`` estimate and read a
      call's tokens, as :class:`llmguard.RateLimit`.
    * ``backend`` (a :class:`RateLimitBackend`, e.g. ``llmguard.backends.redis.RedisBackend``)
      shares every deployment's quotas, pauses and circuit across processes.
    """

    __slots__ = ("deployments", "backend", "_admission", "_tokens", "_usage", "_line",
                 "_priority", "_calls", "_failovers", "_exhausted", "_timers",
                 "__weakref__")

    def __init__(
        self,
        *deployments: Deployment,
        strategy: str = "headroom",
        tokens: Callable[..., int] | None = None,
        priority: Callable[..., int] | None = None,
        usage: Callable[[Any], int | None] | None = None,
        max_wait: float | None = None,
        backend: RateLimitBackend | None = None,
        seed: int | None = None,
    ) -> None:
        if not deployments:
            raise ValueError("Router needs at least one deployment: Router(Deployment("
                             "client_a.chat.completions.create, name='a', rpm=500), ...)")
        names: set[str] = set()
        for deployment in deployments:
            if not isinstance(deployment, Deployment):
                raise TypeError(f"Router takes llmguard.Deployment objects, got {deployment!r}; "
                                "e.g. Deployment({'model': 'gpt-4o-eu'}, name='eu', rpm=500)")
            if deployment.name in names:
                raise ValueError(f"two deployments have the name {deployment.name!r}: each name "
                                 "must be unique (it names the deployment's quotas and metrics)")
            if deployment.owner is not None:
                raise ValueError(f"deployment {deployment.name!r} already belongs to another "
                                 "Router; create a Deployment per router")
            names.add(deployment.name)
        order = check_strategy(strategy)
        for name, fn in (("tokens", tokens), ("priority", priority), ("usage", usage)):
            callable_or_none(name, fn)
        number("max_wait", max_wait, optional=True, unit=" of seconds",
               hint="; pass None to wait as long as it takes")
        check_backend(backend)
        #: Where every deployment's quota state lives.
        self.backend: RateLimitBackend = MemoryBackend() if backend is None else backend
        #: The deployments, in the order given.
        self.deployments: tuple[Deployment, ...] = deployments
        for deployment in deployments:
            deployment.attach(self, self.backend)
            if deployment.circuit is None:
                deployment.circuit = default_circuit(deployment.key, self.backend)
        # Input and output apart at some deployment: every call's estimate is split (an int).
        self._tokens = (split_estimate(tokens) if any(d.split for d in deployments)
                        else estimate_tokens if tokens is None else tokens)
        self._usage = usage
        self._priority = priority
        self._admission = Admission(deployments, order, random.Random(check_seed(seed)),
                                    isinstance(self.backend, TakesNow), max_wait)
        self._line = self._admission.line
        self._calls = self._failovers = self._exhausted = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- the call --------------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        self._calls += 1
        tokens = self._tokens(*call.args, **call.kwargs)
        priority = (call.priority or 0) if self._priority is None else self._priority(
            *call.args, **call.kwargs)
        excluded: frozenset[Any] = frozenset()
        caller = call.current, call.fn, call.kwargs
        try:
            while True:
                deployment, ticket = await self._admission.grant(call, tokens, excluded,
                                                                     priority)
                try:
                    return await self._attempt(call, call_next, deployment, ticket, tokens, caller)
                except Exception as exc:
                    if not moves(exc):
                        raise
                    excluded |= {deployment}
                    if not any(d not in excluded and d.fits(tokens) for d in self.deployments):
                        self._exhausted += 1
                        raise
                    deployment.moved += 1
                    self._failovers += 1
        finally:
            call.current, call.fn, call.kwargs = caller

    async def _attempt(self, call: Call, call_next: Handler, deployment: Deployment, ticket: Any,
                       tokens: int, caller: tuple[Attempt, Any, dict[str, Any]]) -> Any:
        # Each deployment is an attempt of its own (Fallback's rule), from what the caller set.
        outer, call.fn, call.kwargs = caller
        call.current = Attempt(outer.number, outer.deadline, parent=outer)
        call.tokens = tokens
        call.record.deployment = deployment.name
        deployment.sent += 1
        circuit = deployment.circuit
        before = circuit.state if circuit else None
        loop = asyncio.get_running_loop()
        started = loop.time()
        current = _current.set((deployment, started))
        try:
            result = await send(deployment, call, call_next)
        except BaseException as exc:
            self._failed(call, deployment, ticket, tokens, exc)
            publish_circuit(call, deployment, before)
            raise
        finally:
            _current.reset(current)
        if isinstance(result, Stream):  # usage comes (if at all) in the final chunk
            ref = weakref.ref(result)  # no cycle through the stream: a dropped one settles
            result.defer(lambda error: self._ended(
                call, deployment, ticket, tokens, getattr(ref(), "usage_chunk", None), error,
                loop.time() - started))
        else:
            self._ended(call, deployment, ticket, tokens, result, None, loop.time() - started)
        publish_circuit(call, deployment, before)
        return result

    def _ended(self, call: Call, deployment: Deployment, ticket: Any, tokens: int, result: Any,
               error: BaseException | None, seconds: float) -> None:
        used = None
        if result is not None and deployment.quotas is not None and any(
                q.tokens for q in deployment.quotas):
            used = (split_used if deployment.split else used_tokens)(call, result, tokens,
                                                                     self._usage)
        deployment.release(ticket, tokens, True, used)
        if error is None:
            deployment.succeeded += 1
            deployment.sample(seconds)
        elif isinstance(error, Exception):
            deployment.failed += 1
        self._line.wake()

    def _failed(self, call: Call, deployment: Deployment, ticket: Any, tokens: int,
                exc: BaseException) -> None:
        deployment.release(ticket, tokens, call.sent)
        if isinstance(exc, Exception) and call.sent:  # (not its circuit's refusal)
            deployment.failed += 1
            # The error's headers, unless an integration below wrote them for the observer
            # (``observe_response`` read them already: read twice, a 429 counted twice)
            headers = error_headers(exc) if call.response_headers is None else None
            if headers is not None:
                observe(deployment, headers)
        loop = asyncio.get_running_loop()
        pause = refused(deployment, exc, ticket, loop.time())
        if pause is not None:  # a 429: this deployment alone cools down per its Retry-After
            if deployment.name not in self._timers:
                call.emit(EventKind.DEPLOYMENT_COOLDOWN, "router", delay=pause, error=exc,
                          detail=deployment.name)
            else:
                self._timers[deployment.name].cancel()
            self._timers[deployment.name] = loop.call_later(pause, self._cooled, deployment)
        self._line.wake()

    def _cooled(self, deployment: Deployment) -> None:
        """A deployment's 429 cooldown is over."""
        self._timers.pop(deployment.name, None)
        if events.subscribers:
            events.emit(events.Event(EventKind.DEPLOYMENT_RECOVERED, "router",
                                     detail=deployment.name))
        self._line.wake()

    # -- what it learns and tells ----------------------------------------------------------

    def assume_spent(self) -> None:
        """Count every deployment's quotas as used up now (one still learning its quotas: when
        learned), as :meth:`llmguard.RateLimit.assume_spent` (a run resumed after a kill)."""
        for deployment in self.deployments:
            deployment.assume_spent()

    def observe_headers(self, headers: Mapping[str, str], *, partition: Any = None) -> None:
        """Provider rate-limit headers of the attempt in progress (an integration below calls
        it): the deployment it went to learns its quotas from them, or follows them."""
        current = _current.get(None)
        if current is not None and current[0].owner is self:
            deployment, admitted = current
            observe(deployment, headers, admitted)
            self._line.wake()

    def observe_response(self, call: Call) -> None:
        """:class:`~llmguard.HeaderObserver`: the attempt's response headers (written by an
        upstream below) go to the deployment it went to."""
        if call.response_headers is not None:
            self.observe_headers(call.response_headers)

    def statistics(self) -> RouterStats:
        now = loop_time()
        per = {d.name: deployment_stats(d, now) for d in self.deployments}
        return RouterStats(self._calls, sum(d.in_flight for d in self.deployments),
                           self._line.waiting, self._failovers, self._exhausted,
                           self._admission.rejected, self._line.timed_out, per)

    def __repr__(self) -> str:
        names = ", ".join(d.describe() for d in self.deployments)
        return (f"<Router {self._admission.strategy} [{names}] in_flight="
                f"{sum(d.in_flight for d in self.deployments)} waiting={self._line.waiting}>")
