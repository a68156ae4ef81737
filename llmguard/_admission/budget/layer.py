"""The Budget layer: reserve each attempt's maximum cost, settle it to the answer's cost.

Why reserve, not check: a budget that compares the spend so far with the cap and records the
cost after the answer lets every call that starts while others are in flight through, so a
burst passes the cap by its own size (``benchmarks/bench_budget.py``). Here every attempt holds
its maximum cost in the ledger before it is sent, atomically with the check, and gives back the
difference once the answer says what it cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..._core import events
from ..._core.call import Call
from ..._core.check import callable_or_none, number, text
from ..._core.events import Event, EventKind
from ..._core.layer import Handler
from ..._core.public import public
from ..._core.stream import Stream
from ..._core.tokens import extract_usage, field, max_output, prompt_bound
from .charge import answer_cost, failed_cost
from .ledger import account_of, ledger_of
from .line import Lines
from .prices import DEFAULT_MAX_OUTPUT, Price, PriceBook, UnpricedModel, nanos, to_usd
from .reservation import Reservation, exceeded
from .stats import BudgetStats
from .windows import check_per, window

__all__ = ["Budget"]

log = logging.getLogger("llmguard.budget")


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
    * ``soft`` in (0, 1]: publish a ``budget_soft_limit`` event once per key and window (across
      the processes sharing a ledger) when the spend reaches that fraction of the cap.
    * ``backend``: ``RedisBackend(url)`` shares the budget across processes (atomic Lua);
      ``name`` tells budgets on one backend apart.

    :meth:`reserve` holds money for work the layer does not wrap (a provider batch).
    """

    __slots__ = ("usd", "per", "soft", "name", "ledger", "_cap", "_prices", "_key", "_lines",
                 "_in_flight", "_admitted", "_rejected", "_refunds", "_overruns", "_warned",
                 "_soft")

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
        self.ledger = ledger_of(backend)
        self._cap = nanos(self.usd, down=True)
        self._prices = PriceBook(prices)
        self._key = key
        self._lines = Lines(self.ledger)
        self.ledger.listen(self._lines.wake)
        self._in_flight = self._admitted = self._rejected = self._refunds = self._overruns = 0
        self._warned: set[str | None] = set()
        self._soft = None if soft is None else max(1, nanos(soft * self.usd))

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        key = None if self._key is None else self._key(call)
        model = call.model
        try:
            price = self._prices.price(model)
        except UnpricedModel as exc:
            self._rejected += 1
            raise call.rejected("budget", exc) from None
        amount = price.reserve(prompt_bound(*call.args, **call.kwargs),
                               self._output(call.kwargs, model, price))
        label, ends = window(self.per, time.time())
        account = account_of(self.name, key, label)

        def refuse(spent: int, reserved: int) -> BaseException:
            self._rejected += 1
            return call.rejected("budget", exceeded(
                self.name, self.usd, self.per, key, label, ends, f"this call to {model!r}",
                amount, spent, reserved))

        if amount > self._cap:
            raise refuse(0, 0)
        ticket = await self._lines.admit(account, amount, self._cap, ends, refuse)
        self._admitted += 1
        self._in_flight += 1
        before = call.record.cost
        try:
            result = await call_next(call)
        except BaseException as exc:
            self._settle(account, ticket, amount, failed_cost(call, exc, amount), key, call)
            raise
        if isinstance(result, Stream):  # the usage comes (if at all) in the final chunk
            stream = result
            result.defer(lambda error: self._settle(account, ticket, amount, answer_cost(
                call, price, stream.usage_chunk, amount, before), key, call))
        else:
            self._settle(account, ticket, amount,
                         answer_cost(call, price, result, amount, before), key, call)
        return result

    async def reserve(self, usd: float, *, key: Hashable = None, wait: bool = True
                      ) -> Reservation | None:
        """Hold ``usd`` of ``key``'s budget for work this layer does not wrap (a provider
        batch), and return the reservation: ``settle(cost)`` it once the work says what it
        cost. Like a call, it waits while reservations in flight may free room and raises
        :class:`BudgetExceeded` once it cannot fit even if they cost nothing; ``wait=False``
        returns None instead of waiting."""
        number("usd", usd, unit=" of US dollars", hint=" (what the work may cost at most)")
        amount = nanos(usd)
        label, ends = window(self.per, time.time())
        account = account_of(self.name, key, label)

        def refuse(spent: int, reserved: int) -> BaseException:
            self._rejected += 1
            return exceeded(self.name, self.usd, self.per, key, label, ends,
                            f"a reservation of ${usd:.6f}", amount, spent, reserved)

        if amount > self._cap:
            raise refuse(0, 0)
        if wait:
            ticket = await self._lines.admit(account, amount, self._cap, ends, refuse)
        elif account in self._lines.lines:  # calls are waiting: they go first
            return None
        else:
            ticket, spent, reserved = await self.ledger.reserve(account, amount, self._cap, ends)
            if ticket is None:
                if spent + amount > self._cap:
                    raise refuse(spent, reserved)
                return None
        self._admitted += 1
        self._in_flight += 1
        return Reservation(usd, key, lambda cost: self._settle(account, ticket, amount, cost,
                                                                key, None))

    def max_cost(self, request: Mapping[str, Any], *, batch: bool = False) -> float:
        """USD a chat-completions ``request`` body may cost at most (what a call reserves);
        ``batch``: through the provider's batch API, at its batch price."""
        model = request.get("model")
        price = self._price(model, batch)
        return to_usd(price.reserve(prompt_bound(**request), self._output(request, model, price)))

    def cost(self, model: str | None, answer: Any, *, batch: bool = False) -> float | None:
        """USD an ``answer`` of ``model`` costs at this budget's prices (``batch``: the batch
        price), from the usage it reports (None when it reports none)."""
        usage = extract_usage(answer)
        return None if usage is None else to_usd(self._price(model, batch).cost(
            field(answer, "usage"), usage.input_tokens, usage.output_tokens))

    def _price(self, model: str | None, batch: bool) -> Price:
        price = self._prices.price(model)
        return price.batch() if batch else price

    def _output(self, kwargs: Mapping[str, Any], model: str | None, price: Price) -> int:
        output = max_output(kwargs)
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

    def _settle(self, account: str, ticket: Any, amount: int, cost: int, key: Hashable,
                call: Call | None) -> None:
        self._in_flight -= 1
        self._refunds += cost == 0
        if cost > amount:
            self._overruns += 1
        if self._soft is None:
            self.ledger.settle(account, ticket, cost)
        else:  # the ledger tells the first settlement of the window to reach it, anywhere
            self.ledger.settle(account, ticket, cost, soft=self._soft,
                               on_soft=lambda: self._soft_event(call, key))

    def _soft_event(self, call: Call | None, key: Hashable) -> None:
        if call is not None:
            call.emit(EventKind.BUDGET_SOFT_LIMIT, "budget", detail=self.statistics(key))
        elif events.subscribers:
            events.emit(Event(EventKind.BUDGET_SOFT_LIMIT, "budget",
                              detail=self.statistics(key)))

    def price(self, model: str | None, *, batch: bool = False) -> tuple[float, float]:
        """``(usd_per_million_input, usd_per_million_output)`` this budget charges ``model``
        at (``batch``: through the provider's batch API); raises :class:`LookupError` saying
        how to price a model it has no price for."""
        price = self._price(model, batch)
        return price.input, price.output

    def _account(self, key: Hashable) -> tuple[str, str, float | None]:
        label, ends = window(self.per, time.time())
        return account_of(self.name, key, label), label, ends

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
