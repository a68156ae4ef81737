"""What ``Budget.reserve`` hands back, and the BudgetExceeded a Budget raises.

A reservation holds money in a budget for work the Budget does not wrap itself (a provider
batch: ``llmguard.batch_api.run(budget=...)``, ``llmguard run --batch-api --max-cost``); it ends
once, settled with what the work cost.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import UTC, datetime

from ..._core.errors import BudgetExceeded
from .prices import nanos, to_usd

__all__ = ["Reservation", "exceeded"]


class Reservation:
    """``usd`` held in ``key``'s budget until :meth:`settle`."""

    __slots__ = ("_end", "key", "usd")

    def __init__(self, usd: float, key: Hashable, end: Callable[[int], None]) -> None:
        #: What is held (USD).
        self.usd = usd
        #: The budget's key it is held in.
        self.key = key
        self._end: Callable[[int], None] | None = end

    @property
    def settled(self) -> bool:
        return self._end is None

    def settle(self, usd: float | None = None) -> None:
        """End the reservation: ``usd`` joins the spend (0: nothing was billed, the whole
        reservation goes back; None: charged as reserved, for work whose cost is unknown). It
        may exceed the reservation (counted in ``overruns``). Once only."""
        if self._end is None:
            raise RuntimeError("this reservation was settled already: settle each one once")
        if usd is not None and not (isinstance(usd, (int, float)) and usd >= 0):
            raise ValueError(f"usd must be a cost >= 0 (or None: as reserved), got {usd!r}")
        end, self._end = self._end, None
        end(nanos(self.usd if usd is None else usd))

    def __repr__(self) -> str:
        state = "settled" if self._end is None else "held"
        return f"<Reservation ${self.usd:.6f} key={self.key!r} {state}>"


def exceeded(name: str, usd: float, per: str | None, key: Hashable, label: str,
             ends: float | None, what: str, amount: int, spent: int,
             reserved: int) -> BudgetExceeded:
    """The error of a reservation of ``amount`` (for ``what``) that can never fit."""
    whose = "" if key is None else f" for key {key!r}"
    when = "" if ends is None else f" ({per} {label} UTC)"
    resets = ("" if ends is None else ", or wait for the window to reset at "
              + datetime.fromtimestamp(ends, UTC).strftime("%Y-%m-%dT%H:%MZ"))
    return BudgetExceeded(
        f"Budget {name!r}{whose}{when} cannot fit {what}: it may cost up to "
        f"${to_usd(amount):.6f}, ${to_usd(spent):.6f} of the ${usd:.6f} cap is spent and "
        f"${to_usd(reserved):.6f} is reserved by calls in flight, so it would pass the cap even "
        "if those cost nothing; raise the cap (usd=), lower max_tokens or shorten the prompt"
        f"{resets}",
        spent=to_usd(spent), reserved=to_usd(reserved), cap=usd, needed=to_usd(amount),
        resets_at=ends)
