"""What the other layers learned about a call, read in one place.

Today the layers annotate ``call.notes`` (string keys); a typed event record will replace it.
:func:`facts` is the only code of the observability package that reads those notes, so the
switch is a change to this one function.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._core.call import Call

__all__ = ["Facts", "NO_FACTS", "facts"]


class Facts(NamedTuple):
    """What happened to one call besides its result (every field None or 0 when unknown)."""

    #: Attempts after the first (Retry).
    retries: int = 0
    #: Name of the alternate that answered (Fallback), or None.
    fallback: Any = None
    #: Cache outcome: ``"hit"``, ``"miss"``, ``"coalesced"`` or None (no cache).
    cache: str | None = None
    #: The layer that refused the call, or None.
    rejected_by: str | None = None
    #: The limiter that last delayed the call, or None.
    delayed_by: str | None = None
    #: Seconds spent waiting for admission, or None.
    wait: float | None = None
    #: Spend in USD (the litellm integration prices each attempt), or None.
    cost: float | None = None
    #: ``gen_ai.provider.name`` as the integration knows it, or None.
    provider: str | None = None
    #: ``gen_ai.operation.name`` as the integration knows it (``"embeddings"``), or None.
    operation: str | None = None
    #: ``(server.address, server.port)`` the provider was reached at, or None.
    server: tuple[str, int | None] | None = None

    @property
    def billable(self) -> bool:
        """False when the answer came from the cache (a hit, or a waiter on another call's
        lookup): no provider call, so no tokens, cost or operation duration of its own."""
        return self.cache not in ("hit", "coalesced")


NO_FACTS = Facts()
_CACHE_ONLY = {outcome: Facts(cache=outcome) for outcome in ("hit", "miss", "coalesced", "bypass")}


def facts(call: Call) -> Facts:
    """The facts the layers recorded on ``call`` (``NO_FACTS`` when they recorded none)."""
    notes = call.notes
    if not notes:
        return NO_FACTS
    if len(notes) == 1:  # the common case: the cache's outcome alone, one shared record each
        only = _CACHE_ONLY.get(notes.get("cache"))
        if only is not None:
            return only
    get = notes.get
    return Facts(get("retries") or 0, get("fallback"), get("cache"), get("rejected_by"),
                 get("delayed_by"), get("wait"), get("cost"), get("provider"),
                 get("operation"), get("server"))
