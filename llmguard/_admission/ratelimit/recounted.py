"""An entry counted anew at another charge factor, and the caps and readings that counted it.

A header's reading leaves us ``remaining`` less ours the server may not have counted yet, each
at what we believed it charged (:mod:`.reading`): a cap until the window's end
(``Window.caps``) and the open group of readings it bounds (``Readings.groups``) keep that
sum. When the factor is calibrated (:mod:`.charge`: an opening burst reserved at 1.15x, the
server charging 1.113x) ours are counted again at it, and so must be the room those left: held
at the opening factor, the first answer of a strict 10,000 TPM fixed window started at :56
left a cap of 4 tokens where the server had room for 2 more of ours, and the 42nd request
of a minute that admits 42 waited for the next one (a fourth minute for three minutes'
quota: 1.91x the ideal time). Counted at what the server is now believed to charge, the cap
is what the reading itself leaves: never more than the server's own count allows.

Takes no clock: tested directly.
"""

from __future__ import annotations

from typing import Any

from .queued import subtracted

__all__ = ["counted", "recount"]


def counted(window: Any, entry: Any, tokens: int) -> None:
    """``entry`` of ``window`` counts ``tokens`` from now on (its tracks already told): a token
    cap and an open token reading group that took it off as not counted by the server yet
    (admitted from their first seq on, or queued below as they read) get the change, as a
    reconciliation gives it (``Window.adjust``); the reading's own ticket, counted by the
    server as it charges, changes nothing."""
    change = tokens - entry.tokens
    cap = window.caps.get(True) if window.caps else None
    if cap is not None and entry.seq != cap[3] and (
            entry.seq >= cap[2] or subtracted(entry.queued, cap[4])):
        cap[0] -= change
    group = window.readings.groups.get(True)
    if group is not None and entry.seq != group[7] and (
            entry.seq >= group[4] or subtracted(entry.queued, group[6])):
        group[5] -= change
    entry.tokens = tokens


def recount(window: Any, now: float, charge: Any, entries: list[Any],
            count: Any = None) -> None:
    """Count ``entries`` at what ``charge`` says the server charged them (or ``count(entry)``),
    settled or not."""
    for entry in entries:
        charged = charge.units(entry.estimate) if count is None else count(entry)
        if charged == entry.tokens:
            continue
        for each in window.tracks:
            if not each.quota.tokens:
                continue
            again = getattr(each, "recount", None)  # a learned quota's pacers
            if again is not None:
                again(now, entry, charged)
            elif not hasattr(each, "rescale"):  # a log
                each.adjust(now, entry, charged, entry.live)
            elif entry.owner is window:  # a bucket settles once: only what is outstanding
                each.rescale(now, entry, charged)
        counted(window, entry, charged)
