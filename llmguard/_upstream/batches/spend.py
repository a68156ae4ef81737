"""A spend cap over provider batches (``batch_api.run(budget=...)``, ``llmguard run --batch-api
--max-cost``).

Before a batch is submitted it reserves its lines' maximum cost at the batch price (each line's
prompt bound and ``max_tokens``, as an online call reserves), all at once; when only a first
part of the batch fits, that part is submitted alone and the rest waits. Once the batch ends
the reservation settles to what its output says it cost: each answered line's usage at the
batch price (charged its bound when the answer reports none), nothing for lines that failed or
expired, nothing for a batch the provider refused. The spend therefore never passes the cap,
and when even the next line alone could pass it the run stops sending: its lines are reported
as not sent, for ``--resume`` with a new cap.
"""

from __future__ import annotations

from typing import Any

from ..._core.errors import BudgetExceeded
from .plan import Chunk, Request
from .results import LineResult

__all__ = ["BatchSpend", "OverBudget", "not_sent"]


class OverBudget(Exception):
    """Even the next line alone could pass the cap: the run stops sending."""


class BatchSpend:
    """The reservations of one batch run in ``budget`` (a :class:`llmguard.Budget`)."""

    __slots__ = ("_bounds", "_held", "budget")

    def __init__(self, budget: Any) -> None:
        self.budget = budget
        self._held: dict[str, Any] = {}  # chunk key -> its Reservation
        self._bounds: dict[str, float] = {}  # line id -> its maximum cost (asked again and again)

    async def split(self, chunk: Chunk) -> tuple[Chunk | None, Chunk | None]:
        """``(now, later)``: the first lines of ``chunk`` reserved now (None: none fits now, but
        a reservation in flight may free room) and the rest, to submit later (None: nothing
        left). Raises :class:`OverBudget` when the first line can never fit (spent plus its
        bound passes the cap)."""
        bounds = [self._bound(r) for r in chunk.requests]
        stats = await self.budget.usage()
        take, total = 0, 0.0
        for bound in bounds:
            if total + bound > stats.remaining_usd:
                break
            take, total = take + 1, total + bound
        while take:  # the ledger decides (another process may have reserved meanwhile)
            try:
                held = await self.budget.reserve(sum(bounds[:take]), wait=False)
            except BudgetExceeded:
                held = None
            if held is not None:
                now, later = _part(chunk, 0, take), _part(chunk, take, len(bounds))
                self._held[now.key] = held
                return now, later
            take -= 1
        if stats.spent_usd + bounds[0] > stats.cap_usd:
            raise OverBudget
        return None, chunk

    def settle(self, chunk: Chunk, results: list[LineResult]) -> None:
        """``chunk``'s batch ended with ``results`` (none: the provider refused the batch)."""
        held = self._held.pop(chunk.key, None)
        if held is None:  # submitted by an earlier run: counted against that run's cap
            return
        cost = 0.0
        wanted = {r.id: r for r in chunk.requests}
        for result in results:
            request = wanted.pop(result.id, None)
            if request is None or result.error is not None:
                continue  # failed and expired lines are not billed
            line = self.budget.cost(chunk.model, result.response, batch=True)
            cost += self._bound(request) if line is None else line
        for request in chunk.requests:
            self._bounds.pop(request.id, None)
        held.settle(cost)

    def abandon(self) -> None:
        """The run ends with batches still running (interrupted, cancelled, failed): each
        keeps its whole reservation, settled as spent (the provider may still bill it, and a
        run that adopts the batch reserves nothing for it again), so the cap still holds."""
        for held in self._held.values():
            held.settle(None)
        self._held.clear()

    def _bound(self, request: Request) -> float:
        bound = self._bounds.get(request.id)
        if bound is None:
            bound = self._bounds[request.id] = self.budget.max_cost(request.body, batch=True)
        return bound


def not_sent(budget: Any, hint: str) -> dict[str, str]:
    """The error of a line the cap left unsent (the run's ``not_sent``); ``hint``: how to send
    it."""
    stats = budget.statistics()
    return {"kind": "not_sent", "type": "BudgetExceeded", "message": (
        f"not sent: it could pass the budget (${stats.spent_usd:.6f} of ${stats.cap_usd:g} "
        f"spent); {hint}")}


def _part(chunk: Chunk, start: int, end: int) -> Chunk | None:
    """Lines ``start:end`` of ``chunk`` (None when empty; the chunk itself when whole), with
    their share of its token estimate."""
    if start == end:
        return None
    if end - start == len(chunk.requests):
        return chunk
    return Chunk(chunk.model, chunk.requests[start:end],
                 chunk.tokens * (end - start) // len(chunk.requests), 0)
