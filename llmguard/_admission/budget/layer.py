"""The Budget layer: reserve each attempt's maximum cost, settle it to the answer's cost.

Why reserve, not check: a gateway that compares the spend so far with the cap and records the
cost after the answer lets every call that starts while the last one is in flight through, so a
burst passes the cap by its own size (LiteLLM's proxy: open reports of keys passing
``max_budget`` under concurrency; ``benchmarks/bench_budget.py``). Here every attempt holds its
maximum cost (``prices``: the prompt's bound times the input price plus ``max_tokens`` times
the output price) in the ledger before it is sent, atomically with the check, and gives back
the difference once the answer says what it cost; so the settled spend plus what is in flight
never passes the cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..._core.call import Call
from ..._core.check import callable_or_none, number, text
from ..._core.errors import BudgetExceeded
from ..._core.events import EventKind
from ..._core.layer import Handler
from ..._core.public import public
from ..._core.stream import Stream
from ..._core.sweep import SWEEP_AT, sweep
from ..._core.tokens import max_output, prompt_bound
from .charge import answer_cost, failed_cost
from .ledger import BudgetLedger, MemoryLedger
from .line import Lines
from .prices import DEFAULT_MAX_OUTPUT, Price, PriceBook, UnpricedModel, nanos, to_usd
from .stats import BudgetStats
from .windows import check_per, window

__all__ = ["Budget"]

log = logging.getLogger("llmguard.budget")


def _ledger(backend: Any) -> BudgetLedger:
    if backend is None:
        return MemoryLedger()
    if callable(getattr(backend, "budget_ledger", None)):
        return backend.budget_ledger()
    if isinstance(backend, BudgetLedger):
        return backend
    raise TypeError(f"backend must be a llmguard.backends.redis.RedisBackend (shared across "
                    f"processes), a BudgetLedger, or None (this process), got {backend!r}")


def _account(name: str, key: Hashable, label: str) -> str:
    # None, "" and 1 vs "1" never share an account (as RedisBackend's rate-limit keys).
    part = "" if key is None else f"s:{key}" if isinstance(key, str) else \
        f"r:{type(key).__name__}={key!r}"
    return f"{name}|{part}|{label}"


@public
class Budget:
    """Layer: never let the spend pass ``usd`` (per key and window).

    Before each attempt it reserves the attempt's maximum cost: the prompt's bound in tokens
    (its UTF-8 bytes plus framing: never below what a byte-level tokenizer bills) times the
    input price, plus ``max_tokens`` times the output price (without ``max_tokens``: the model's
    maximum output when the price list knows it, else 4,096 tokens, logged once per model).
    After the answer it settles to the cost of the usage reported (cached input at its price;
    a price written by the litellm integration wins); without usage the attempt is charged its
    reservation. An attempt that never reached the provider, or that the provider answered with
    an error, costs nothing; one sent without an answer (timeout, dropped connection,
    cancellation) is charged its reservation, since the provider may have billed it.

    A call whose reservation does not fit waits while calls in flight may free room (woken by
    their settlements, first come first served) and raises :class:`BudgetExceeded` as soon as
    it cannot fit even if all of them cost nothing. So the settled spend never passes the cap
    (``overruns`` counts answers that cost more than their bound: image or audio input).

    * ``prices``: ``{model: (usd_per_million_input, usd_per_million_output[, cached_input])}``
      (``"*"`` for any other model), else litellm's cost map; a model without a price is
      refused at its first call (never counted free).
    * ``per``: ``"minute"``, ``"hour"``, ``"day"`` or ``"month"`` (calendar windows in UTC), or
      None for a total. ``key(call) -> hashable``: one budget per tenant, user or project.
    * ``soft`` in (0, 1]: publish a ``budget_soft_limit`` event once per key and window (in this
      process) when the spend reaches that fraction of the cap.
    * ``backend``: ``RedisBackend(url)`` shares the budget across processes (atomic Lua);
      ``name`` tells budgets on one backend apart.
    """

    __slots__ = ("usd", "per", "soft", "name", "ledger", "_cap", "_prices", "_key", "_lines",
                 "_in_flight", "_admitted", "_rejected", "_refunds", "_overruns", "_warned",
                 "_softened", "_sweep_at")

    def __init__(self, usd: float, *, per: str | None = None,
                 prices: Mapping[str, Any] | None = None,
                 key: Callable[[Call], Hashable] | None = None, backend: Any = None,
                 soft: float | None = None, name: str = "budget") -> None:
        number("usd", usd, unit=" of US dollars", hint=" (the cap)")
        self.per = check_per(per)
        number("soft", soft, optional=True, high=1,
               hint="; a fraction of the cap, e.g. 0.8, or None for no soft limit")
        callable_or_none("key", key, "a callable key(call) -> hashable")
        if "|" in text("name", name):
            raise ValueError(f"name must not contain '|', got {name!r}")
        #: The cap in USD per key and window.
        self.usd = float(usd)
        #: Fraction of the cap at which ``budget_soft_limit`` is published, or None.
        self.soft = soft
        #: The budget's name in the ledger (budgets sharing a backend need different names).
        self.name = name
        #: Where spend and reservations live.
        self.ledger = _ledger(backend)
        self._cap = nanos(self.usd, down=True)
        self._prices = PriceBook(prices)
        self._key = key
        self._lines = Lines(self.ledger)
        self.ledger.listen(self._lines.wake)
        self._in_flight = self._admitted = self._rejected = self._refunds = self._overruns = 0
        self._warned: set[str | None] = set()
        # Accounts whose soft limit was published here -> when their window ends (swept).
        self._softened: dict[str, float | None] = {}
        self._sweep_at = SWEEP_AT

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        key = None if self._key is None else self._key(call)
        model = call.model
        try:
            price = self._prices.price(model)
        except UnpricedModel as exc:
            self._rejected += 1
            raise call.rejected("budget", exc) from None
        amount = price.reserve(prompt_bound(*call.args, **call.kwargs),
                               self._output(call, model, price))
        label, ends = window(self.per, time.time())
        account = _account(self.name, key, label)

        def refuse(spent: int, reserved: int) -> BaseException:
            self._rejected += 1
            return call.rejected("budget", self._exceeded(key, label, ends, model, amount,
                                                          spent, reserved))

        if amount > self._cap:
            raise refuse(0, 0)
        ticket = await self._lines.admit(account, amount, self._cap, ends, refuse)
        self._admitted += 1
        self._in_flight += 1
        before = call.record.cost
        try:
            result = await call_next(call)
        except BaseException as exc:
            cost = failed_cost(call, exc, amount)
            self._refunds += cost == 0
            self._settle(call, account, ticket, amount, cost)
            raise
        if isinstance(result, Stream):  # the usage comes (if at all) in the final chunk
            stream = result
            result.defer(lambda error: self._settle(call, account, ticket, amount, answer_cost(
                call, price, stream.usage_chunk, amount, before)))
        else:
            self._settle(call, account, ticket, amount,
                         answer_cost(call, price, result, amount, before))
        return result

    def _output(self, call: Call, model: str | None, price: Price) -> int:
        output = max_output(call.kwargs)
        if output is not None:
            return output
        output = price.max_output or DEFAULT_MAX_OUTPUT
        if model not in self._warned:
            self._warned.add(model)
            log.warning("llmguard Budget %r: calls to %r set no max_tokens, so each reserves "
                        "%s output tokens (%s) until it settles; set max_tokens to reserve less",
                        self.name, model, f"{output:,}", "the model's maximum" if
                        price.max_output else "the default for models of unknown maximum")
        return output

    def _settle(self, call: Call, account: str, ticket: Any, amount: int, cost: int) -> None:
        self._in_flight -= 1
        if cost > amount:
            self._overruns += 1
        self.ledger.settle(account, ticket, cost)
        if self.soft is not None and account not in self._softened:
            spent, _ = self.ledger.totals(account)
            if spent >= self.soft * self._cap:
                if len(self._softened) >= self._sweep_at:
                    now = time.time()
                    self._sweep_at = sweep(self._softened, lambda e: e is not None and e < now)
                self._softened[account] = window(self.per, time.time())[1]
                call.emit(EventKind.BUDGET_SOFT_LIMIT, "budget", detail=self.statistics(
                    None if self._key is None else self._key(call)))

    def _exceeded(self, key: Hashable, label: str, ends: float | None, model: str | None,
                  amount: int, spent: int, reserved: int) -> BudgetExceeded:
        whose = "" if key is None else f" for key {key!r}"
        when = "" if ends is None else f" ({self.per} {label} UTC)"
        resets = ("" if ends is None else ", or wait for the window to reset at "
                  + datetime.fromtimestamp(ends, UTC).strftime("%Y-%m-%dT%H:%MZ"))
        return BudgetExceeded(
            f"Budget {self.name!r}{whose}{when} cannot fit this call to {model!r}: it may cost "
            f"up to ${to_usd(amount):.6f}, ${to_usd(spent):.6f} of the ${self.usd:.6f} cap is "
            f"spent and ${to_usd(reserved):.6f} is reserved by calls in flight, so it would pass "
            "the cap even if those cost nothing; raise the cap (usd=), lower max_tokens or "
            f"shorten the prompt{resets}",
            spent=to_usd(spent), reserved=to_usd(reserved), cap=self.usd,
            needed=to_usd(amount), resets_at=ends)

    def price(self, model: str | None) -> tuple[float, float]:
        """``(usd_per_million_input, usd_per_million_output)`` this budget charges ``model``
        at; raises :class:`LookupError` saying how to price a model it has no price for."""
        price = self._prices.price(model)
        return price.input, price.output

    def _account(self, key: Hashable) -> tuple[str, str, float | None]:
        label, ends = window(self.per, time.time())
        return _account(self.name, key, label), label, ends

    def statistics(self, key: Hashable = None) -> BudgetStats:
        """``key``'s budget in the current window as known here (a shared ledger: as of the
        last reservation or settlement of this process; :meth:`usage` asks the ledger)."""
        account, label, ends = self._account(key)
        return self._stats(*self.ledger.totals(account), label, ends)

    async def usage(self, key: Hashable = None) -> BudgetStats:
        """``key``'s budget in the current window, read from the ledger itself."""
        account, label, ends = self._account(key)
        return self._stats(*await self.ledger.read(account), label, ends)

    def _stats(self, spent: int, reserved: int, label: str, ends: float | None) -> BudgetStats:
        return BudgetStats(
            self.usd, to_usd(spent), to_usd(reserved),
            max(0.0, to_usd(self._cap - spent - reserved)), label, ends, self._in_flight,
            self._lines.waiting, self._admitted, self._rejected, self._refunds, self._overruns)

    def __repr__(self) -> str:
        per = "" if self.per is None else f" per {self.per}"
        return (f"<Budget {self.name!r} ${self.usd:g}{per} in_flight={self._in_flight} "
                f"waiting={self._lines.waiting} ledger={self.ledger!r}>")
