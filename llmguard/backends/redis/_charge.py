"""What a server that says nothing charges against a token quota, learned once in Redis for
every process sharing a key (``refill="auto"``; in memory, :mod:`llmguard._admission.ratelimit.probing`
and :meth:`~llmguard._admission.ratelimit.charge.Charge.refused`).

Each process sees its own requests only; the server counts every process's. A 429 read
against one process's third of the traffic took its factor to the ceiling (3x: that process
then reserved three times what the server charges), and a probe served bounded nothing. So
the factor is learned on the shared log, whose members carry each request's bare estimate
(``member~estimate:tokens``), and kept in the key's shape HASH as ``charge`` (``"factor,how"``,
:meth:`~llmguard._admission.ratelimit.charge.Charge.shared`'s form), which every process's
mirror adopts at its next reservation (:class:`SharedCharge`):

* **Probe** (``_probe_scripts.CPROBE`` in ``_auto_scripts.RESERVE``). While nothing was heard
  of tokens, a request held back by the token quotas alone, which every process's bare
  estimates in the window (a learned fixed one's, else a sliding one) leave room for, goes as
  the charge's probe (admitted ``5``), one at a time for all processes (``cp``: when and
  whose, expiring after two spans), never beside a probe of the shape (``sp``); one that
  would go but for an answer not read yet or a probe in flight polls (``POLL``).
* **Served**, **Refused** (``_charged_scripts.CHARGED``): what the probe's answer, or a 429
  to any request, shows of the factor on the shared log.

Until the charge's probe was refused, a probe of the shape beyond a sliding window goes only
when the window is full at the least the server charges (``cl`` times the bare estimates,
``_probe_scripts.SILENT``): full only as we count ours at the opening factor, a strict server
(charging 1.11x our estimate) served it, no sliding window was concluded, and the burst paced
within a fixed window drew 5-9 429s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..._admission.ratelimit.backend import MemoryBackend
from ..._admission.ratelimit.charge import MOST, Charge
from . import _silent
from ._charged_scripts import CHARGED
from ._client import Connection

__all__ = ["CHARGED", "STAGE", "Mirror", "SharedCharge", "alone", "estimated", "refused", "settled"]

#: The charge probe's stage in ``AutoTicket.silent`` and RESERVE's reply.
STAGE = 5


def estimated(member: str, estimate: int) -> str:
    """A log member prefix carrying the request's bare estimate (read by the Lua below)."""
    return f"{member}~{estimate}"


class SharedCharge(Charge):
    """A process's mirror of the shared charge (``window.charge`` under Redis, made with its
    window: :class:`Mirror`): what a 429 shows is learned on the shared log (:func:`refused`),
    not from this process's third of it, and the factor learned for a server that says
    nothing is adopted as published."""

    __slots__ = ("alone",)

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        #: The 429 being read is to a request admitted while Redis was down (``on_error=
        #: "local"``): no shared log holds it, so this process learns from it as in memory.
        self.alone = False

    @property
    def partial(self) -> bool:  # type: ignore[override]
        """This process's part of every process's requests (``_refused_scripts.ADMITS`` reads
        them all), but for a request admitted ``alone``."""
        return not self.alone

    def refused(self, window: Any, now: float, ticket: Any, limit: int) -> bool:
        """Nothing locally (the 429 is read against every process's requests, ``CHARGED``),
        unless the request was admitted ``alone`` (:meth:`Charge.refused`)."""
        return self.alone and Charge.refused(self, window, now, ticket, limit)

    def follow(self, window: Any, now: float, shared: str) -> None:
        """Adopt ``shared`` (``"factor,how"``) as published: a calibration while nothing was
        heard (:meth:`Charge.adopt`), or what a server that says nothing was shown to charge
        (its factor, down or up: ours in the mirror count at it once lowered)."""
        shared = shared.decode() if isinstance(shared, bytes) else shared
        if self.how == "opening" and not shared.endswith((",silent", ",kept")):
            self.adopt(shared)
            return
        factor, _, how = shared.partition(",")
        if self.heard or how not in ("silent", "kept"):
            return
        was, self.factor = self.factor, min(MOST, max(1.0, float(factor)))
        self.silent, self.kept = True, how == "kept"
        if self.factor < was:
            self.rescale(window, now)


class Mirror(MemoryBackend):
    """A :class:`~llmguard.backends.redis.RedisBackend`'s own windows (what this process
    learns from its answers, and its limits while Redis is down), each made with a
    :class:`SharedCharge` from the start: none is converted mid-call, and a window first
    made during an outage is of the same kind as one made at a reservation in Redis."""

    __slots__ = ()
    charge = SharedCharge


@contextmanager
def alone(window: Any, local: bool) -> Iterator[None]:
    """While a 429 is read in ``window``: to a ``local`` request (admitted while Redis was
    down, no shared log holds it), what it shows of the charge is learned by this process
    (:attr:`SharedCharge.alone`)."""
    charge = window.charge
    if charge is None or not local:
        yield
        return
    charge.alone = True
    try:
        yield
    finally:
        charge.alone = False


def _tell(connection: Connection, names: list[str], outcome: str, member: str,
          quotas: list[Any]) -> None:
    connection.keep(CHARGED, [names[3], names[0], names[1]], [outcome, member, *quotas],
                    "sharing what the server charges")


def settled(connection: Connection, ticket: Any, tokens: int | None, names: list[str],
            quotas: list[Any]) -> None:
    """A probe ``ticket`` was answered (``tokens``) or never sent (None): the charge's here,
    a shape's by ``_silent``."""
    if ticket.silent != STAGE:
        _silent.settled(connection, ticket, tokens, names, quotas)
        return
    ticket.silent = 0
    _tell(connection, names, "gone" if tokens is None else "served", ticket.member, quotas)


def refused(connection: Connection, window: Any, ticket: Any, names: list[str],
            quotas: list[Any]) -> bool:
    """A 429 to ``ticket`` (an ``AutoTicket``) while the server has said nothing of tokens:
    read on the shared log. True when it was the charge's probe: nothing else for the shape
    (a 429 of another request ends its probing, ``_silent``; this one drew it)."""
    charge, probe = window.charge, ticket.silent == STAGE
    if probe:
        ticket.silent = 0
    if charge is not None and not charge.heard and (charge.silent or probe):
        # the shape's first probe (``_probe_scripts``' ``3``): a sliding window's 429
        outcome = "shape" if ticket.silent == 3 else "refused"
        _tell(connection, names, outcome, ticket.member, quotas)
    return probe
