"""One deployment of a model: where an attempt goes (a callable or keyword overrides), its own
quotas (given, or learned from its rate-limit headers), its own circuit and statistics.

The quota state is RateLimit's: the same :class:`~llmguard.RateLimitBackend` (in memory, or
Redis to share it across processes), the same :class:`Quota` tuple, margin (measured from the
send latency, ``ratelimit.latency``) and header handling, under one backend key per deployment.
A reservation there is the routing decision: the backend admits atomically, so two callers
never take the same last unit of a deployment's quota.
"""

from __future__ import annotations

import math
from typing import Any

from .._admission.permits import SlotBackend
from .._admission.ratelimit.headers import spend
from .._admission.ratelimit.latency import Margin
from .._admission.ratelimit.quotas import build_quotas, check_choice
from .._admission.ratelimit.split import Tokens, check_fits
from .._admission.ratelimit.split_backend import SplitBackend
from .._core import clock
from .._core.check import number, text
from .._core.public import public
from .learn import PROBE
from .target import check_target
from .timeout import DeploymentTimeout

__all__ = ["Deployment"]

#: Weight of the newest sample in a deployment's latency average (``least_latency``).
_EWMA = 0.2


@public
class Deployment:
    """One place that serves the model, for :class:`llmguard.Router`.

    * ``target``: an async callable (another client's method, a client with another key) called
      with the call's arguments, or a dict of keyword overrides (``{"model": "gpt-4o-eu"}``)
      applied to the guarded function's call, as :class:`llmguard.Fallback`'s alternates.
    * ``name``: unique within a router; names the deployment in ``record.deployment``, the
      ``llmguard.deployment`` metric attribute, statistics and events, and its quotas in a
      shared backend (every process routing to ``name`` shares them).
    * ``rpm`` / ``tpm`` / ``input_tpm`` / ``output_tpm``: its quotas (as
      :class:`llmguard.RateLimit`'s; ``refill``, ``burst`` and ``margin`` likewise, the margin
      measured from the send latency unless given; input and output apart reserve the prompt
      and ``max_tokens`` and give unused output back).
      With neither, they are learned from its ``x-ratelimit-limit-requests`` / ``-tokens``
      headers (per minute, as OpenAI and Azure report them); until the first such headers it
      takes one call at a time.
    * ``concurrency``: most calls in flight at this deployment at once. With a backend that
      holds slots across processes (a :class:`~llmguard.backends.SlotBackend`: ``RedisBackend``)
      the cap is shared by every process routing to ``name`` (a slot is a lease: a killed
      process's slots come back within 10 s; a slot freed elsewhere is found by polling, at
      most 0.1 s late); with the in-memory backend it holds in this process.
    * ``weight``: its share under ``strategy="weighted"``; under ``"headroom"`` it scales the
      deployment's free fraction.
    * ``timeout``: seconds an attempt may take here from when it is sent (not while queued in
      the layers below the Router), then it moves to another deployment (a circuit failure).
    * ``circuit``: a :class:`llmguard.CircuitBreaker` for this deployment; by default each gets
      its own (opening at half of at least 5 calls failing in 30 s, for 10 s), ``False`` for
      none.
    """

    __slots__ = ("target", "name", "rpm", "tpm", "concurrency", "weight", "refill", "burst",
                 "margin", "timeout", "circuit", "quota_margin", "key", "backend", "in_flight",
                 "latency", "cool_until", "sent", "succeeded", "failed", "rate_limited", "moved",
                 "owner", "spent", "split", "slots", "claiming", "timed")

    def __init__(
        self,
        target: Any,
        *,
        name: str,
        rpm: int | None = None,
        tpm: int | None = None,
        input_tpm: int | None = None,
        output_tpm: int | None = None,
        concurrency: int | None = None,
        weight: float = 1,
        refill: str = "auto",
        burst: float | None = None,
        margin: float | None = None,
        timeout: float | None = None,
        circuit: Any = None,
    ) -> None:
        #: What an attempt here calls: an async callable, or a dict of keyword overrides.
        self.target = check_target(target, name)
        #: The deployment's name (unique within a router).
        self.name = text("name", name, hint="; e.g. name='eu'")
        self.rpm = number("rpm", rpm, integer=True, optional=True, hint="; or None")
        self.tpm = number("tpm", tpm, integer=True, optional=True, hint="; or None")
        self.concurrency = number("concurrency", concurrency, integer=True, optional=True,
                                  hint="; pass None for no bound")
        self.weight = number("weight", weight, hint="; e.g. weight=2 for twice the share")
        self.refill = check_choice("refill", refill)
        #: RateLimit's ``burst`` and ``margin``, for the quotas given or learned.
        self.burst, self.margin = burst, margin
        self.timeout = number("timeout", timeout, optional=True, unit=" of seconds",
                              hint="; pass None for no bound")
        #: ``timeout`` as a Timeout layer of its own (timed from the send), or None.
        self.timed = None if timeout is None else DeploymentTimeout(self.timeout, self.name)
        if circuit is not None and circuit is not False and not callable(circuit):
            raise TypeError(f"circuit must be a llmguard.CircuitBreaker, None (the default one) "
                            f"or False (none), got {circuit!r}")
        #: The deployment's CircuitBreaker (made by the router when None), or False.
        self.circuit = circuit
        #: Its quotas and their margin (``ratelimit.latency.Margin``: ``margin=``, else measured
        #: from the send latency as RateLimit's), or None while the quotas are to be learned.
        given = any(q is not None for q in (rpm, tpm, input_tpm, output_tpm))
        self.quota_margin = Margin(build_quotas(rpm, None, tpm, burst, margin, refill, input_tpm,
                                                output_tpm), margin) if given else None
        #: Input and output token quotas apart (Anthropic's ITPM/OTPM), reserved as
        #: RateLimit's are (a ``SplitBackend`` over the router's) and reconciled to the usage.
        self.split = self.quotas is not None and any(q.part for q in self.quotas)
        if self.quotas is None:  # checked now, used once the quotas are learned
            build_quotas(1, None, None, burst, margin, refill)
        #: Its key in the router's backend, and that backend (set by the router).
        self.key = f"deployment:{name}"
        self.backend: Any = None
        #: Its ``concurrency`` slots shared across processes (SharedSlots), or None.
        self.slots: Any = None
        self.owner: Any = None  # the Router it belongs to
        #: Calls in flight here now (this process): holding a grant, not still asking for one.
        self.in_flight = 0
        #: Reservations here whose remote round trips are in progress (counted against caps).
        self.claiming = 0
        #: Average seconds an answer took here (None before the first).
        self.latency: float | None = None
        #: Loop time until which a 429 without learned quotas keeps it out (``learn.refused``).
        self.cool_until = 0.0
        self.sent = self.succeeded = self.failed = self.rate_limited = self.moved = 0
        #: Its quotas count as used up once known (:meth:`assume_spent` before they were;
        #: ``learn.observe`` learns them).
        self.spent = False

    # -- quota -----------------------------------------------------------------------------

    @property
    def quotas(self) -> tuple[Any, ...] | None:
        """The quotas enforced, each window longer than the server's by the margin in force
        (a new tuple when it changes: the backend retimes), or None while to be learned."""
        margin = self.quota_margin
        if margin is None:
            return None
        if margin.measured:
            margin.refresh(clock.now())  # back to the start after a window without a sample
        return margin.quotas

    def fits(self, tokens: int) -> bool:
        """False when ``tokens`` (or their input or output part) exceed its token quota: it
        could never take the call."""
        if (quotas := self.quotas) is None:
            return True
        if isinstance(tokens, Tokens) and check_fits(tokens, quotas) is not None:
            return False
        return all(q.limit >= tokens for q in quotas if q.tokens and not q.part)

    def attach(self, owner: Any, backend: Any) -> None:
        """Join ``owner`` (a Router), its quotas kept in ``backend`` (input and output apart
        under keys of their own there), its ``concurrency`` slots there too when ``backend``
        holds slots across processes."""
        self.owner = owner
        self.backend = SplitBackend(backend) if self.split else backend
        if self.concurrency is not None and isinstance(backend, SlotBackend):
            self.slots = backend.concurrency_slots(self.key)

    async def reserve(self, tokens: int, now: float) -> tuple[float, Any]:
        """``(0.0, ticket)`` when it admits a call of ``tokens`` now (the slot and the quota
        are taken), else ``(seconds until it may have room, None)`` (``inf``: until a call here
        ends) with nothing taken."""
        if self.cool_until > now:
            return self.cool_until - now, None
        circuit, busy = self.circuit, self.in_flight + self.claiming
        if circuit and circuit.state.value != "closed":
            wait = circuit.statistics().retry_after  # open: until it probes; else 0
            if wait > 0:
                return wait, None
            if busy:  # one probe at a time: the circuit would refuse the others
                return math.inf, None
        if self.concurrency is not None and busy >= self.concurrency:
            return math.inf, None
        if self.quotas is None and busy:  # not learned yet: one probe at a time
            return math.inf, None
        self.claiming += 1  # held across the remote round trips below
        slots, shared, ticket = self.slots, False, None
        try:
            if slots is not None:  # a slot of the cap across processes, or when to ask again
                shared, wait = await slots.try_acquire(self.concurrency)
                if not shared:
                    return wait, None
            if self.quotas is None:
                ticket = PROBE
                return 0.0, PROBE
            wait, ticket = await self.backend.reserve(self.key, self.quotas,
                                                      tokens if self.split else int(tokens))
            return wait, ticket
        finally:
            self.claiming -= 1
            if ticket is not None:
                self.in_flight += 1
            elif shared:  # refused, failed or cancelled: nothing stays taken
                slots.release()

    def release(self, ticket: Any, tokens: int, sent: bool, used: int | None = None) -> None:
        """The call holding ``ticket`` is done here: the slot goes back, and the reservation
        too when the call was never ``sent``; otherwise it is reconciled to ``used`` tokens (a
        bucket settles every reservation, changed or not)."""
        self.in_flight -= 1
        if self.slots is not None:
            self.slots.release()
        if ticket is PROBE or ticket is None:
            return
        if not sent:
            self.backend.refund(self.key, ticket)
            return
        actual = tokens if used is None else used
        if self.split or actual != tokens or self.quotas[0].continuous:
            self.backend.reconcile(self.key, ticket, actual)

    def assume_spent(self) -> None:
        """Count its quotas as used up now, or when learned (a run resumed after a killed one:
        the provider still counts the killed run's requests)."""
        self.spent = True
        if self.quotas is not None:
            spend(self.backend, self.quotas, self.key)

    def headroom(self) -> float:
        """The free fraction of its tightest quota or slot count, in [0, 1]."""
        free = 1.0 if self.concurrency is None else max(0.0, 1 - self.in_flight / self.concurrency)
        if self.quotas is None:
            return 0.0 if self.in_flight else free
        requests, tokens, paused = self.backend.headroom(self.key, self.quotas)
        if paused:
            return 0.0
        for quota in self.quotas:
            if quota.window >= 60.0:  # the per-minute quotas (not burst shares)
                left = tokens if quota.tokens else requests
                free = min(free, max(0, left) / quota.limit)
        return free

    def sample(self, seconds: float) -> None:
        """An answer took ``seconds`` here."""
        latency = self.latency
        self.latency = seconds if latency is None else latency + _EWMA * (seconds - latency)

    def describe(self) -> str:
        """Its name and quotas, with the margin in force (``0.05 s (measured)``)."""
        if (quotas := self.quotas) is None:
            return f"{self.name} (quotas not learned yet)"
        return (f"{self.name} ({', '.join(q.describe() for q in quotas)}; margin "
                f"{self.quota_margin!r})")

    def __repr__(self) -> str:
        target = (",".join(f"{k}=..." for k in self.target) if isinstance(self.target, dict)
                  else getattr(self.target, "__qualname__", type(self.target).__qualname__))
        return (f"<Deployment {self.describe()} target={target} in_flight={self.in_flight} "
                f"sent={self.sent} failed={self.failed}>")

